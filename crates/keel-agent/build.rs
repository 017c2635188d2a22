//! The programs this crate's tests need, probed when it is built (keel-probe): a test whose
//! program is missing here is ignored with its reason, and under CI it runs (and fails).
fn main() {
    keel_probe::programs(&["dhcpd", "kea-dhcp4", "named-checkconf", "named-checkzone", "strace"]);
}
