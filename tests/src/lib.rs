//! Integration-test harness for Tern (being written).
