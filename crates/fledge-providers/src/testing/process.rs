//! Real programs started by tests: Prometheus, HAProxy and nginx.
