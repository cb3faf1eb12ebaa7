"""The edge proxy: UDP, TCP, syslog and HTTP inputs, batched and forwarded to the receiver."""
