//! The read-only TFTP server with the real `curl` (tftp://), directly and through a proxy that
//! drops and duplicates packets.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::UdpSocket;

use crate::support::Keel;

fn curl_tftp(addr: &str, file: &str, out: &std::path::Path) -> std::process::Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "60", "--tftp-blksize", "1468", "-o"])
        .arg(out)
        .arg(format!("tftp://{addr}/{file}"))
        .output()
        .expect("curl")
}

/// A 1 MiB file of varied bytes, in the server's TFTP root.
fn payload(k: &Keel) -> Vec<u8> {
    let data: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(k.data().join("tftp/boot.bin"), &data).unwrap();
    data
}

/// Forwards client ↔ server, dropping every 40th and duplicating every 9th packet each way. The
/// client sees one address (the proxy's); the server's transfer port is learned from its replies.
async fn lossy_proxy(server: SocketAddr) -> SocketAddr {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = front.local_addr().unwrap();
    let client: Arc<tokio::sync::Mutex<Option<SocketAddr>>> = Arc::default();
    let server_tid: Arc<tokio::sync::Mutex<Option<SocketAddr>>> = Arc::default();
    let count = Arc::new(AtomicUsize::new(0));
    let fate = move |n: usize| (n % 40 == 39, n % 9 == 8); // (drop, duplicate)
    {
        let (front, back, client, server_tid, count) = (
            front.clone(),
            back.clone(),
            client.clone(),
            server_tid.clone(),
            count.clone(),
        );
        tokio::spawn(async move {
            let mut buf = vec![0u8; 70_000];
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                *client.lock().await = Some(from);
                let to = server_tid.lock().await.unwrap_or(server);
                let (drop, dup) = fate(count.fetch_add(1, Ordering::SeqCst));
                if !drop {
                    let _ = back.send_to(&buf[..n], to).await;
                    if dup {
                        let _ = back.send_to(&buf[..n], to).await;
                    }
                }
            }
        });
    }
    tokio::spawn(async move {
        let mut buf = vec![0u8; 70_000];
        let replies = AtomicUsize::new(0);
        while let Ok((n, from)) = back.recv_from(&mut buf).await {
            *server_tid.lock().await = Some(from);
            let Some(c) = *client.lock().await else { continue };
            let (drop, dup) = fate(replies.fetch_add(1, Ordering::SeqCst) + 3);
            if !drop {
                let _ = front.send_to(&buf[..n], c).await;
                if dup {
                    let _ = front.send_to(&buf[..n], c).await;
                }
            }
        }
    });
    addr
}

#[tokio::test]
#[cfg_attr(not(has_curl), ignore = "needs curl, not installed here (.ci/run installs it)")]
async fn a_mebibyte_arrives_byte_for_byte_even_through_loss_and_duplicates() {
    // Resends after 100 ms, so that ~40 lost packets cost seconds, not a minute.
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("keel.toml");
    std::fs::write(&cfg, "[tftp]\nretransmit_ms = 100\n").unwrap();
    let k = Keel::start_with_env(
        &["--config", cfg.to_str().unwrap()],
        &[("RUST_LOG", "info,keel_server::tftp=debug")],
    );
    let data = payload(&k);
    let tmp = tempfile::tempdir().unwrap();
    let direct = tmp.path().join("direct.bin");
    let out = curl_tftp(&k.tftp, "boot.bin", &direct);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(&direct).unwrap(), data);
    let proxy = lossy_proxy(k.tftp.parse().unwrap()).await;
    let lossy = tmp.path().join("lossy.bin");
    let result = tokio::task::spawn_blocking({
        let lossy = lossy.clone();
        move || curl_tftp(&proxy.to_string(), "boot.bin", &lossy)
    })
    .await
    .unwrap();
    assert!(
        result.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&result.stderr),
        k.log()
    );
    assert_eq!(
        std::fs::read(&lossy).unwrap(),
        data,
        "byte for byte through the lossy proxy"
    );
}

#[tokio::test]
#[cfg_attr(not(has_curl), ignore = "needs curl, not installed here (.ci/run installs it)")]
async fn paths_outside_the_root_and_writes_are_refused() {
    let k = Keel::start(&[]);
    payload(&k);
    let tmp = tempfile::tempdir().unwrap();
    for bad in ["../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "nosuch"] {
        let out = curl_tftp(&k.tftp, bad, &tmp.path().join("x"));
        assert!(!out.status.success(), "{bad} was served");
    }
    let upload = tmp.path().join("up");
    std::fs::write(&upload, b"data").unwrap();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-T"])
        .arg(&upload)
        .arg(format!("tftp://{}/up", k.tftp))
        .output()
        .unwrap();
    assert!(!out.status.success(), "a write was accepted");
    assert!(!k.data().join("tftp/up").exists());
    // Still serving.
    let out = curl_tftp(&k.tftp, "boot.bin", &tmp.path().join("ok"));
    assert!(out.status.success());
}
