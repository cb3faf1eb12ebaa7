"""A Kinesis Data Stream read by the proxy's `kinesis` input (the original ByteFreezer proxy's
Kinesis plugin; what a Firehose delivery stream reads from): every shard is read from its
checkpoint, and a shard's checkpoint (the sequence number of its last record) moves only once its
records are in the spool, so a crash reads them again (at least once) and nothing is skipped.

A record's data becomes records: a CloudWatch Logs subscription message (gzip JSON with
`logEvents`, what CloudWatch Logs puts in a stream) a record per log event; anything else,
gzip'd or not, a record per line (a JSON object line as it is, other text wrapped), each with
`kinesis_partition_key`, `kinesis_sequence_number` and `kinesis_shard_id` unless it has fields of
those names.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bytefreezer.ingress.cloudwatch import payload_records
from bytefreezer.ingress.proxy import checkpoints

log = logging.getLogger(__name__)

GET_RECORDS_LIMIT = 10_000


@dataclass
class Batch:
    """The records read from one shard, and the sequence number its checkpoint moves to once
    they are spooled (None: the shard is finished, closed by a reshard and read to its end)."""

    shard: str
    records: list[bytes]
    sequence: str | None
    iterator: str | None  # where the next read of the shard starts


def records_of(data: bytes, partition_key: str, sequence: str, shard: str) -> list[bytes]:
    """The JSON records one Kinesis record's data makes (see ``cloudwatch``)."""
    meta = {
        "kinesis_partition_key": partition_key,
        "kinesis_sequence_number": sequence,
        "kinesis_shard_id": shard,
    }
    return payload_records(data, meta)


class StreamReader:
    """The shards of ``stream`` read from the checkpoints in ``checkpoint_file`` (botocore, in
    the caller's thread; ``endpoint_url`` for a Kinesis other than AWS's)."""

    def __init__(
        self,
        stream: str,
        checkpoint_file: Path,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        read_from: Literal["beginning", "end"] = "beginning",
    ) -> None:
        import botocore.session

        self.stream = stream
        self.checkpoint_file = checkpoint_file
        self.read_from = read_from
        session = botocore.session.get_session()
        self._client = session.create_client(
            "kinesis", region_name=region or os.environ.get("AWS_REGION") or "us-east-1",
            endpoint_url=endpoint_url,
        )  # fmt: skip
        self.checkpoints: dict[str, str | None] = checkpoints.load(checkpoint_file) or {}
        self._iterators: dict[str, str | None] = {}
        self.records_read = 0

    def _shards(self) -> list[str]:
        shards: list[str] = []
        arguments: dict[str, Any] = {"StreamName": self.stream}
        while True:
            page = self._client.list_shards(**arguments)
            shards += [shard["ShardId"] for shard in page["Shards"]]
            if not page.get("NextToken"):
                return shards
            arguments = {"NextToken": page["NextToken"]}

    def _iterator(self, shard: str) -> str | None:
        iterator = self._iterators.get(shard)
        if iterator is not None:
            return iterator
        arguments: dict[str, Any] = {"StreamName": self.stream, "ShardId": shard}
        sequence = self.checkpoints.get(shard)
        if sequence:
            arguments.update(
                ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=sequence
            )
        elif self.read_from == "beginning" or self.checkpoints:
            # a shard met after the first start (a reshard's child) is read from its start
            arguments["ShardIteratorType"] = "TRIM_HORIZON"
        else:
            arguments["ShardIteratorType"] = "LATEST"
        found: str | None = self._client.get_shard_iterator(**arguments)["ShardIterator"]
        return found

    def read(self) -> list[Batch]:
        """What each unfinished shard has past its checkpoint (not moving the checkpoints)."""
        batches = []
        for shard in self._shards():
            if shard in self.checkpoints and self.checkpoints[shard] is None:
                continue  # read to its end before
            iterator = self._iterator(shard)
            if iterator is None:
                continue
            page = self._client.get_records(ShardIterator=iterator, Limit=GET_RECORDS_LIMIT)
            records: list[bytes] = []
            sequence = self.checkpoints.get(shard)
            for record in page["Records"]:
                sequence = record["SequenceNumber"]
                records += records_of(
                    record["Data"], record.get("PartitionKey", ""), sequence, shard
                )
            following = page.get("NextShardIterator")
            if following is None:  # closed and read to its end
                batches.append(Batch(shard, records, None, None))
            elif page["Records"]:
                batches.append(Batch(shard, records, sequence, following))
            else:
                self._iterators[shard] = following  # nothing new: read on from there
        return batches

    def commit(self, batch: Batch) -> None:
        """``batch``'s records are spooled: move its shard's checkpoint (``save`` writes)."""
        self.checkpoints[batch.shard] = batch.sequence
        self._iterators[batch.shard] = batch.iterator
        self.records_read += len(batch.records)

    def forget_iterators(self) -> None:
        """After a refused spool: read the shards again from their checkpoints."""
        self._iterators.clear()

    def save(self) -> None:
        """Write the checkpoints (see ``checkpoints.save``)."""
        checkpoints.save(self.checkpoint_file, self.checkpoints)
