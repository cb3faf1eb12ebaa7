"""The control client: one interface, two implementations (in-process store, and HTTP)."""

from __future__ import annotations

from typing import Any, Protocol

import httpx

from bytefreezer import errors
from bytefreezer.control.models import (
    ApiKeyInfo,
    Dataset,
    DatasetSpec,
    DatasetStatus,
    DestinationCheck,
    HealthReport,
    KeyScope,
    Lease,
    NewApiKey,
    Tenant,
    Usage,
)
from bytefreezer.errors import BytefreezerError, ControlUnavailable


class ControlClient(Protocol):
    """What every component may ask of the control service."""

    def create_tenant(self, tenant: Tenant) -> Tenant: ...
    def get_tenant(self, name: str) -> Tenant: ...
    def list_tenants(self) -> list[Tenant]: ...
    def update_tenant(self, name: str, *, active: bool) -> Tenant: ...
    def set_daily_ingest_limit(self, name: str, daily_ingest_mb: int | None) -> Tenant: ...
    def delete_tenant(self, name: str) -> None: ...
    def create_dataset(self, tenant: str, spec: DatasetSpec) -> Dataset: ...
    def put_dataset(self, tenant: str, spec: DatasetSpec) -> Dataset: ...
    def get_dataset(self, tenant: str, name: str) -> Dataset: ...
    def list_datasets(self, tenant: str | None = None) -> list[Dataset]: ...
    def delete_dataset(self, tenant: str, name: str) -> None: ...
    def create_key(
        self,
        tenant: str | None,
        dataset: str | None = None,
        *,
        role: str = "ingest",
        description: str = "",
        expires_in_days: float | None = None,
    ) -> NewApiKey: ...
    def list_keys(self, tenant: str | None = None) -> list[ApiKeyInfo]: ...
    def revoke_key(self, key_id: str) -> None: ...
    def verify_ingest(self, key: str, tenant: str, dataset: str) -> KeyScope: ...
    def authenticate(self, key: str) -> KeyScope: ...
    def acquire_leases(self, names: list[str], owner: str, ttl: float) -> list[Lease]: ...
    def renew_lease(self, lease: Lease, ttl: float) -> Lease: ...
    def check_lease(self, lease: Lease) -> None: ...
    def release_leases(self, leases: list[Lease]) -> None: ...
    def report_health(self, report: HealthReport) -> None: ...
    def report_usage(self, reports: list[Usage]) -> None: ...
    def list_usage(self, tenant: str | None = None, days: int = 7) -> list[Usage]: ...
    def list_components(self) -> list[HealthReport]: ...
    def report_dataset_status(self, status: DatasetStatus) -> DatasetStatus: ...
    def get_dataset_status(self, tenant: str, name: str) -> list[DatasetStatus]: ...
    def list_dataset_statuses(
        self, tenant: str | None = None, state: str | None = None, stage: str | None = None
    ) -> list[DatasetStatus]: ...
    def clear_dataset_status(self, tenant: str, name: str, stage: str | None = None) -> None: ...
    def check_destination(self, tenant: str, name: str) -> DestinationCheck: ...
    def ping(self) -> None: ...


_ERROR_TYPES: dict[str, type[BytefreezerError]] = {
    cls.__name__: cls
    for cls in (
        errors.ConfigError,
        errors.InvalidName,
        errors.NotFound,
        errors.Conflict,
        errors.Gone,
        errors.AuthError,
        errors.Forbidden,
        errors.LeaseLost,
    )
}


class HttpControl:
    """The control client over HTTP, authenticating with a bearer key."""

    def __init__(
        self, url: str, api_key: str = "", *, timeout: float = 30.0, ca_file: str | None = None
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = url.rstrip("/")
        verify: Any = ca_file if ca_file else True
        self._http = httpx.Client(
            base_url=self.url + "/api/v1", headers=headers, timeout=timeout, verify=verify
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        try:
            response = self._http.request(
                method, path, json=body, params={k: v for k, v in params.items() if v is not None}
            )
        except httpx.HTTPError as exc:
            raise ControlUnavailable(f"control service at {self.url} unreachable: {exc}") from exc
        if response.status_code >= 400:
            try:
                payload = response.json()
            except ValueError:
                payload = {"error": response.text}
            message = payload.get("error", response.text)
            if response.status_code >= 500:
                raise ControlUnavailable(f"control service error {response.status_code}: {message}")
            raise _ERROR_TYPES.get(payload.get("type", ""), BytefreezerError)(message)
        return response.json() if response.content else None

    def create_tenant(self, tenant: Tenant) -> Tenant:
        return Tenant.model_validate(self._call("POST", "/tenants", tenant.model_dump()))

    def get_tenant(self, name: str) -> Tenant:
        return Tenant.model_validate(self._call("GET", f"/tenants/{name}"))

    def list_tenants(self) -> list[Tenant]:
        return [Tenant.model_validate(t) for t in self._call("GET", "/tenants")]

    def update_tenant(self, name: str, *, active: bool) -> Tenant:
        return Tenant.model_validate(self._call("PATCH", f"/tenants/{name}", {"active": active}))

    def set_daily_ingest_limit(self, name: str, daily_ingest_mb: int | None) -> Tenant:
        body = {"daily_ingest_mb": daily_ingest_mb}
        return Tenant.model_validate(self._call("PATCH", f"/tenants/{name}", body))

    def delete_tenant(self, name: str) -> None:
        self._call("DELETE", f"/tenants/{name}")

    def create_dataset(self, tenant: str, spec: DatasetSpec) -> Dataset:
        body = spec.model_dump(exclude_none=True)
        return Dataset.model_validate(self._call("POST", f"/tenants/{tenant}/datasets", body))

    def put_dataset(self, tenant: str, spec: DatasetSpec) -> Dataset:
        body = spec.model_dump(exclude_none=True)
        path = f"/tenants/{tenant}/datasets/{spec.name}"
        return Dataset.model_validate(self._call("PUT", path, body))

    def get_dataset(self, tenant: str, name: str) -> Dataset:
        return Dataset.model_validate(self._call("GET", f"/tenants/{tenant}/datasets/{name}"))

    def list_datasets(self, tenant: str | None = None) -> list[Dataset]:
        path = "/datasets" if tenant is None else f"/tenants/{tenant}/datasets"
        return [Dataset.model_validate(d) for d in self._call("GET", path)]

    def delete_dataset(self, tenant: str, name: str) -> None:
        self._call("DELETE", f"/tenants/{tenant}/datasets/{name}")

    def create_key(
        self,
        tenant: str | None,
        dataset: str | None = None,
        *,
        role: str = "ingest",
        description: str = "",
        expires_in_days: float | None = None,
    ) -> NewApiKey:
        body: dict[str, Any] = {
            "tenant": tenant,
            "dataset": dataset,
            "role": role,
            "description": description,
        }
        if expires_in_days is not None:
            body["expires_in_days"] = expires_in_days
        return NewApiKey.model_validate(self._call("POST", "/keys", body))

    def list_keys(self, tenant: str | None = None) -> list[ApiKeyInfo]:
        return [ApiKeyInfo.model_validate(k) for k in self._call("GET", "/keys", tenant=tenant)]

    def revoke_key(self, key_id: str) -> None:
        self._call("DELETE", f"/keys/{key_id}")

    def verify_ingest(self, key: str, tenant: str, dataset: str) -> KeyScope:
        body = {"key": key, "tenant": tenant, "dataset": dataset}
        return KeyScope.model_validate(self._call("POST", "/auth/verify", body))

    def authenticate(self, key: str) -> KeyScope:
        return KeyScope.model_validate(self._call("POST", "/auth/identify", {"key": key}))

    def acquire_leases(self, names: list[str], owner: str, ttl: float) -> list[Lease]:
        body = {"names": names, "owner": owner, "ttl": ttl}
        return [Lease.model_validate(x) for x in self._call("POST", "/leases/acquire", body)]

    def renew_lease(self, lease: Lease, ttl: float) -> Lease:
        body = {"lease": lease.model_dump(), "ttl": ttl}
        return Lease.model_validate(self._call("POST", "/leases/renew", body))

    def check_lease(self, lease: Lease) -> None:
        self._call("POST", "/leases/check", {"lease": lease.model_dump()})

    def release_leases(self, leases: list[Lease]) -> None:
        self._call("POST", "/leases/release", {"leases": [x.model_dump() for x in leases]})

    def report_health(self, report: HealthReport) -> None:
        self._call("POST", "/health/reports", report.model_dump())

    def report_usage(self, reports: list[Usage]) -> None:
        self._call("POST", "/usage", [u.model_dump() for u in reports])

    def list_usage(self, tenant: str | None = None, days: int = 7) -> list[Usage]:
        path = "/usage" if tenant is None else f"/tenants/{tenant}/usage"
        return [Usage.model_validate(x) for x in self._call("GET", path, days=days)]

    def list_components(self) -> list[HealthReport]:
        return [HealthReport.model_validate(x) for x in self._call("GET", "/components")]

    def report_dataset_status(self, status: DatasetStatus) -> DatasetStatus:
        path = f"/tenants/{status.tenant}/datasets/{status.dataset}/status/{status.stage}"
        return DatasetStatus.model_validate(self._call("PUT", path, status.model_dump()))

    def get_dataset_status(self, tenant: str, name: str) -> list[DatasetStatus]:
        path = f"/tenants/{tenant}/datasets/{name}/status"
        return [DatasetStatus.model_validate(x) for x in self._call("GET", path)]

    def list_dataset_statuses(
        self, tenant: str | None = None, state: str | None = None, stage: str | None = None
    ) -> list[DatasetStatus]:
        path = "/dataset-status" if tenant is None else f"/tenants/{tenant}/dataset-status"
        found = self._call("GET", path, state=state, stage=stage)
        return [DatasetStatus.model_validate(x) for x in found]

    def clear_dataset_status(self, tenant: str, name: str, stage: str | None = None) -> None:
        self._call("DELETE", f"/tenants/{tenant}/datasets/{name}/status", stage=stage)

    def check_destination(self, tenant: str, name: str) -> DestinationCheck:
        path = f"/tenants/{tenant}/datasets/{name}/destination/check"
        return DestinationCheck.model_validate(self._call("POST", path))

    def ping(self) -> None:
        self._call("GET", "/health")
