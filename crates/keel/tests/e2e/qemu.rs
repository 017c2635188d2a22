//! A real machine boots through keel: a QEMU guest (Debian's qemu-system-x86 with the iPXE ROM of
//! ipxe-qemu; KVM when there is one, software emulation otherwise) loads keel's bootstrap over
//! keel's TFTP, its script from `/boot/{mac}`, the kernel and an initrd over keel's HTTP, and a
//! tiny Linux (Debian's kernel, a busybox initrd built here) prints its kernel command line on the
//! serial console and powers off; another registers itself through the LLDP menu first. QEMU's
//! user-mode network gives the address (its DHCP) and the bootfile URL; everything after that is
//! keel's.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::Keel;

/// A `newc` cpio archive of (path, mode, contents); directories have no contents.
fn cpio(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut push = |name: &str, mode: u32, data: &[u8], ino: usize| {
        let header = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out.extend_from_slice(data);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    };
    for (i, (name, mode, data)) in entries.iter().enumerate() {
        push(name, *mode, data, i + 1);
    }
    push("TRAILER!!!", 0, &[], 0);
    out
}

fn debian_kernel() -> PathBuf {
    let mut kernels: Vec<PathBuf> = std::fs::read_dir("/boot")
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    kernels.retain(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
    });
    kernels.sort();
    kernels
        .pop()
        .expect("no /boot/vmlinuz-*: install the Debian package linux-image-amd64 (see .ci/run)")
}

/// Runs a guest with `mac` until its serial output has a whole line containing `until` (or the
/// timeout); returns the output. The guest is killed when done.
fn run_guest(k: &Keel, mac: &str, until: &str, timeout: Duration) -> String {
    run_guest_typing(k, mac, &[], until, timeout)
}

/// As [`run_guest`], and types on the guest's serial console: each `(seen, keys)` sends `keys`
/// once the output has `seen` (in order), as someone at the machine would.
fn run_guest_typing(k: &Keel, mac: &str, typing: &[(&str, &str)], until: &str, timeout: Duration) -> String {
    let tftp_port = k.tftp.rsplit(':').next().unwrap();
    let qemu = "qemu-system-x86_64";
    let mut child = keel_testkit::guard::spawn(
        Command::new(qemu)
            .args(["-accel", "tcg", "-m", "512", "-nographic", "-no-reboot", "-boot", "n"])
            .args([
                "-netdev",
                &format!("user,id=n0,bootfile=tftp://10.0.2.2:{tftp_port}/boot.ipxe"),
            ])
            .args(["-device", &format!("virtio-net-pci,netdev=n0,mac={mac}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .expect("qemu-system-x86_64 (Debian packages qemu-system-x86 and ipxe-qemu) must be installed");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut typing = typing.iter();
    let mut next = typing.next();
    // Where the output stood when the last keys were sent: the next prompt comes after it.
    let mut from = 0;
    while Instant::now() < deadline {
        if let Ok(chunk) = rx.recv_timeout(Duration::from_millis(200)) {
            out.extend(chunk);
            let text = String::from_utf8_lossy(&out).into_owned();
            if let Some((seen, keys)) = next {
                if let Some(i) = text[from..].find(seen) {
                    from += i + seen.len();
                    // QEMU takes from the pipe only what the guest's UART has room for.
                    let _ = stdin.write_all(keys.as_bytes());
                    let _ = stdin.flush();
                    next = typing.next();
                }
            }
            // The whole line, not just its start: the serial console is slow.
            if next.is_none() && text.find(until).is_some_and(|i| text[i..].contains('\n')) {
                break;
            }
        }
        if child.try_wait().ok().flatten().is_some() {
            break;
        }
    }
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join(); // everything the guest printed, up to its end
    while let Ok(chunk) = rx.try_recv() {
        out.extend(chunk);
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    format!("{}{err}", String::from_utf8_lossy(&out))
}

fn prepare(k: &Keel) {
    let data = k.data();
    // keel's bootstrap on its TFTP: iPXE fetches its script from keel over HTTP.
    let http_port = k.url.rsplit(':').next().unwrap();
    std::fs::write(
        data.join("tftp/boot.ipxe"),
        format!("#!ipxe\necho keel bootstrap\nchain http://10.0.2.2:{http_port}/boot/${{net0/mac}}\n"),
    )
    .unwrap();
    let rfs1 = data.join("boot/rfs1");
    std::fs::create_dir_all(&rfs1).unwrap();
    std::fs::copy(debian_kernel(), rfs1.join("vmlinuz")).unwrap();
    let busybox = std::fs::read("/bin/busybox").expect("/bin/busybox: install busybox-static (see .ci/run)");
    let init = b"#!/bin/busybox sh\n/bin/busybox mkdir -p /proc\n/bin/busybox mount -t proc proc /proc\n\
                 echo \"KEEL-CMDLINE: $(/bin/busybox cat /proc/cmdline)\"\n/bin/busybox poweroff -f\n";
    let initrd = cpio(&[
        ("bin", 0o40755, b""),
        ("bin/busybox", 0o100755, &busybox),
        ("init", 0o100755, init),
    ]);
    std::fs::write(rfs1.join("initrd.img"), initrd).unwrap();
}

#[test]
#[cfg_attr(
    not(all(has_qemu_system_x86_64, has_busybox)),
    ignore = "needs qemu-system-x86_64, busybox, not installed here (.ci/run installs it)"
)]
fn a_qemu_guest_boots_its_rfs_kernel_through_keel() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("keel.toml");
    // The kernel's console on the serial port, and a prompt end if anything goes wrong.
    std::fs::write(&cfg, "[netboot]\ncmdline = \"console=ttyS0 panic=-1\"\n").unwrap();
    let k = Keel::start(&["--config", cfg.to_str().unwrap(), "--example-site"]);
    prepare(&k);
    // r00p01 of the example site: a user machine on rfs1 (gw, 192.168.1.254).
    let out = run_guest(&k, "52:54:00:00:00:01", "KEEL-CMDLINE:", Duration::from_secs(240));
    let line = out
        .lines()
        .find(|l| l.contains("KEEL-CMDLINE:"))
        .unwrap_or_else(|| panic!("the guest never printed its command line; serial output:\n{out}"));
    assert!(line.contains("nfsroot=192.168.1.254:/export/nfsroot"), "{line}");
    assert!(line.contains("rfs=1") && line.contains("hostname=r00p01"), "{line}");
    // An unknown machine reaches the registration (closed here: it says so and waits).
    let out = run_guest(&k, "52:54:00:12:34:99", "not registered", Duration::from_secs(120));
    assert!(out.contains("not registered"), "serial output:\n{out}");
}

/// The LLDP registration menu in a real iPXE. What is real: Debian's iPXE runs keel's `/bootstrap`
/// script (the switch table as `sw_*` settings), keel's registration script with its menu, the
/// switch lookup loop, `/register`, and the boot that follows. What is not: Debian's iPXE has no
/// LLDP and QEMU's user network sends no LLDP frame, so the chassis id the machine "hears" is set
/// in `keel_chassis` by the embedded script, before the registration reads it (on an LLDP-enabled
/// iPXE it reads `${netX.lldp/chassisid}` instead).
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(all(has_qemu_system_x86_64, has_busybox)),
    ignore = "needs qemu-system-x86_64, busybox, not installed here (.ci/run installs it)"
)]
async fn a_qemu_guest_registers_with_its_switchs_room_rfs_and_hfs_through_the_lldp_menu() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("keel.toml");
    std::fs::write(&cfg, "[netboot]\ncmdline = \"console=ttyS0 panic=-1\"\n").unwrap();
    let k = Keel::start(&["--config", cfg.to_str().unwrap(), "--example-site"]);
    prepare(&k);
    for args in [
        &["setting", "set", "allow_self_registration", "true"][..],
        &[
            "switch",
            "add",
            "sw-lab",
            "--chassis",
            "00:1b:21:00:00:09",
            "--room",
            "lab",
            "--rfs",
            "1",
            "--hfs",
            "3",
        ],
    ] {
        let out = k.cli(args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // The embedded script chains to /bootstrap, as prologin's iPXE image does.
    let http_port = k.url.rsplit(':').next().unwrap();
    std::fs::write(
        k.data().join("tftp/boot.ipxe"),
        format!("#!ipxe\nset keel_chassis 00:1b:21:00:00:09\nchain http://10.0.2.2:{http_port}/bootstrap\n"),
    )
    .unwrap();
    let mac = "52:54:00:12:34:77";
    let out = run_guest_typing(
        &k,
        mac,
        // Enter on the menu's first item (register with the switch's values), the hostname, then
        // Enter on the summary's "Yes, register r09p09".
        &[
            ("room lab, RFS 1, HFS 3", "\r"),
            ("Hostname", "r09p09\r"),
            ("Yes, register r09p09", "\r"),
        ],
        "KEEL-CMDLINE:",
        Duration::from_secs(300),
    );
    let line = out
        .lines()
        .find(|l| l.contains("KEEL-CMDLINE:"))
        .unwrap_or_else(|| panic!("the guest never booted after registering; serial output:\n{out}"));
    assert!(line.contains("hostname=r09p09") && line.contains("rfs=1"), "{line}");
    let m: serde_json::Value = k.admin().get("/api/v1/machines/r09p09").await.unwrap();
    assert_eq!(
        (m["room"].as_str(), m["hfs"].as_u64(), m["mac"].as_str()),
        (Some("lab"), Some(3), Some(mac))
    );
    assert_eq!(m["mtype"], "user", "the site's type, not the machine's choice");
}
