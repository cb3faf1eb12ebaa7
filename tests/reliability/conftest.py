"""The receiver fixtures of the ingress tests, for the security and fault tests."""

from tests.ingress.conftest import make_receiver, receiver

__all__ = ["make_receiver", "receiver"]
