//! The programs this crate's tests need, probed when it is built (keel-probe): a test whose
//! program is missing here is ignored with its reason, and under CI it runs (and fails).
fn main() {
    keel_probe::programs(&[
        "ansible-inventory",
        "busybox",
        "chromedriver",
        "chromium",
        "conntrack",
        "curl",
        "dh",
        "dig",
        "django",
        "dpkg-deb",
        "initdb",
        "lintian",
        "named-checkzone",
        "nft",
        "nginx",
        "nsenter",
        "openssl",
        "pdftotext",
        "promtool",
        "python3",
        "qemu-system-x86_64",
        "sqlite3",
        "ssh",
        "ssh-keygen",
        "sshd",
        "systemd-analyze",
        "unshare",
    ]);
}
