//! A real machine boots through keel: a QEMU guest (Debian's qemu-system-x86 with the iPXE ROM of
//! ipxe-qemu; KVM when there is one, software emulation otherwise) loads keel's bootstrap over
//! keel's TFTP, its script from `/boot/{mac}`, the kernel and an initrd over keel's HTTP, and a
//! tiny Linux (Debian's kernel, a busybox initrd built here) prints its kernel command line on the
//! serial console and powers off. QEMU's user-mode network gives the address (its DHCP) and the
//! bootfile URL; everything after that is keel's.

use std::io::Read;
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
    let tftp_port = k.tftp.rsplit(':').next().unwrap();
    let qemu = "qemu-system-x86_64";
    let mut child = Command::new(qemu)
        .args(["-accel", "tcg", "-m", "512", "-nographic", "-no-reboot", "-boot", "n"])
        .args([
            "-netdev",
            &format!("user,id=n0,bootfile=tftp://10.0.2.2:{tftp_port}/boot.ipxe"),
        ])
        .args(["-device", &format!("virtio-net-pci,netdev=n0,mac={mac}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-system-x86_64 (Debian packages qemu-system-x86 and ipxe-qemu) must be installed");
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
    while Instant::now() < deadline {
        if let Ok(chunk) = rx.recv_timeout(Duration::from_millis(200)) {
            out.extend(chunk);
            // The whole line, not just its start: the serial console is slow.
            let text = String::from_utf8_lossy(&out);
            if text.find(until).is_some_and(|i| text[i..].contains('\n')) {
                break;
            }
        }
        if child.try_wait().ok().flatten().is_some() {
            break;
        }
    }
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
