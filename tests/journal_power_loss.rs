//! Power loss under the journal (issue 24): the real writer ([`Journal`], glommio DMA, group
//! commit) appends records, some one at a time, some in groups, some concurrently; after
//! every acknowledgement the test reads the segment as it is at that moment and finds its
//! durable offset `D` (the end of the valid records, every acknowledged one inside). Then,
//! for each acknowledgement, it makes the disk images a power cut could leave: the final
//! segment cut at every byte just past `D`, at every record boundary after it and at sampled
//! bytes to the end; some with the tail zeroed (blocks never written) or a byte flipped
//! (a torn sector). Each image is recovered by the real reader.
//!
//! Properties: bytes once durable are never rewritten; every record acknowledged before the
//! cut is recovered (through `Journal::open`'s fold too); what is recovered is a prefix of
//! what was written (nothing invented or reordered); nothing at or after a damaged byte is
//! accepted; recovery never panics.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use aes_gcm::{Aes256Gcm, KeyInit};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardgate::delivery::record::{Record, State};
use shardgate::queue::journal::{decode_prefix, Journal};

/// One acknowledgement: what was acknowledged up to it and the segment as it was then.
struct Ack {
    ids: Vec<String>,
    image: Vec<u8>,
}

fn acc(id: &str, len: usize) -> Record {
    Record::Acc {
        id: id.into(),
        k: format!("k-{id}"),
        s: "agent:main:main".into(),
        m: "m".repeat(len),
        method: "agent".into(),
        ch: None,
        to: None,
        at: 1_700_000_000_000,
    }
}

fn segment(dir: &Path) -> PathBuf {
    let segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    assert_eq!(segs.len(), 1, "one segment: {segs:?}");
    segs[0].clone()
}

/// Drives the real writer; the acknowledgements in order and the final segment.
fn write(dir: PathBuf, key: Option<[u8; 32]>, seed: u64) -> (Vec<Ack>, Vec<u8>) {
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let cipher = key.map(|k| Aes256Gcm::new_from_slice(&k).unwrap());
            let (j, fold) = Journal::open(&dir, cipher).unwrap();
            assert_eq!(fold.records, 0);
            j.set_snapshot(Box::new(Vec::new));
            j.start();
            let mut rng = StdRng::seed_from_u64(seed);
            let mut acked = Vec::new();
            let mut acks = Vec::new();
            let mut n = 0;
            for round in 0..24 {
                fn size(rng: &mut StdRng) -> usize {
                    match rng.gen_range(0..10) {
                        0 => rng.gen_range(1500..5000),
                        _ => rng.gen_range(0..300),
                    }
                }
                // Past the writer's 128 KiB buffer once.
                let mut big = if round == 22 { 132_000 } else { 0 };
                let mut ids = Vec::new();
                match round % 3 {
                    0 => {
                        n += 1;
                        let id = format!("r{n}");
                        j.append(&acc(&id, size(&mut rng) + std::mem::take(&mut big)))
                            .await
                            .unwrap();
                        ids.push(id);
                    }
                    1 => {
                        // A group: the last append's acknowledgement covers the others.
                        for _ in 0..rng.gen_range(1..5) {
                            n += 1;
                            let id = format!("r{n}");
                            j.append_nowait(&acc(&id, size(&mut rng) + std::mem::take(&mut big)));
                            ids.push(id);
                        }
                        n += 1;
                        let id = format!("r{n}");
                        j.append(&acc(&id, size(&mut rng))).await.unwrap();
                        ids.push(id);
                    }
                    _ => {
                        // Concurrent appends: one group commit or several.
                        let recs: Vec<(String, Record)> = (0..3)
                            .map(|_| {
                                n += 1;
                                let id = format!("r{n}");
                                let r = acc(&id, size(&mut rng) + std::mem::take(&mut big));
                                (id, r)
                            })
                            .collect();
                        let all = futures_lite::future::zip(
                            j.append(&recs[0].1),
                            futures_lite::future::zip(j.append(&recs[1].1), j.append(&recs[2].1)),
                        )
                        .await;
                        assert!(all.0.is_ok() && all.1 .0.is_ok() && all.1 .1.is_ok());
                        ids.extend(recs.into_iter().map(|(id, _)| id));
                    }
                }
                acked.extend(ids);
                let image = std::fs::read(segment(&dir)).unwrap();
                acks.push(Ack {
                    ids: acked.clone(),
                    image,
                });
            }
            // Everything was acknowledged, so the segment at the last acknowledgement is the
            // final one (what a clean close would leave, padding aside).
            j.close().await;
            let last = acks.last().expect("acknowledgements").image.clone();
            // The flusher closes the file (truncating the padding) after `close` returns:
            // wait for that, so the executor does not stop under its last I/O.
            let c = key.map(|k| Aes256Gcm::new_from_slice(&k).unwrap());
            let end = decode_prefix(&last, c.as_ref()).end as u64;
            let seg = segment(&dir);
            for _ in 0..5000 {
                if std::fs::metadata(&seg).unwrap().len() == end {
                    break;
                }
                glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
            }
            (acks, last)
        })
        .unwrap()
        .join()
        .unwrap()
}

fn ids(recs: &[Record]) -> Vec<String> {
    recs.iter()
        .map(|r| match r {
            Record::Acc { id, .. } => id.clone(),
            other => panic!("only admissions were written: {other:?}"),
        })
        .collect()
}

fn power_loss(key: Option<[u8; 32]>, seed: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let (acks, last) = write(dir.clone(), key, seed);
    let cipher = key.map(|k| Aes256Gcm::new_from_slice(&k).unwrap());
    let cipher = cipher.as_ref();
    let whole = decode_prefix(&last, cipher);
    let written = ids(&whole.records);
    assert!(
        whole.damage.is_none(),
        "{:?} (segment {} B; acknowledgement sizes {:?})",
        whole.damage,
        last.len(),
        acks.iter().map(|a| a.image.len()).collect::<Vec<_>>()
    );
    assert_eq!(
        &written,
        &acks.last().unwrap().ids,
        "a clean close keeps everything"
    );
    // Record boundaries in the final segment.
    let mut bounds = vec![0usize];
    for r in &whole.records {
        let len = shardgate::queue::journal::encode(r, cipher).len();
        bounds.push(bounds.last().unwrap() + len);
    }
    assert_eq!(*bounds.last().unwrap(), whole.end);

    let mut rng = StdRng::seed_from_u64(seed ^ 0x1055);
    let (mut images, mut opened) = (0u64, 0u64);
    let recover_dir = tmp.path().join("recover");
    for (k, ack) in acks.iter().enumerate() {
        let then = decode_prefix(&ack.image, cipher);
        let durable = then.end;
        assert!(
            then.damage.is_none(),
            "ack {k}: the segment as acknowledged reads cleanly: {:?}",
            then.damage
        );
        assert_eq!(
            ids(&then.records),
            ack.ids,
            "ack {k}: acknowledged = on disk"
        );
        assert_eq!(
            last[..durable],
            ack.image[..durable],
            "ack {k}: durable bytes were rewritten"
        );
        let acked: HashSet<&String> = ack.ids.iter().collect();
        let mut cuts: Vec<usize> = (durable..(durable + 8).min(last.len() + 1)).collect();
        for &b in bounds.iter().filter(|&&b| b > durable).take(3) {
            cuts.extend([b - 1, b, b + 1]);
        }
        cuts.extend((0..4).map(|_| rng.gen_range(durable..=last.len().min(durable + (32 << 10)))));
        cuts.retain(|&c| c <= last.len());
        for (i, &cut) in cuts.iter().enumerate() {
            let mut image = last[..cut].to_vec();
            // Damage after the durable offset: blocks never written, or a torn sector.
            let damaged_at = match i % 3 {
                1 if cut > durable => {
                    let from = rng.gen_range(durable..cut);
                    image[from..].fill(0);
                    (image[from..] != last[from..cut]).then_some(from)
                }
                2 if cut > durable => {
                    let at = rng.gen_range(durable..cut);
                    image[at] ^= 1 << rng.gen_range(0..8);
                    Some(at)
                }
                _ => None,
            };
            images += 1;
            let got = decode_prefix(&image, cipher);
            let got_ids = ids(&got.records);
            assert!(
                written.starts_with(&got_ids),
                "ack {k}, cut {cut}: recovered {got_ids:?} is not a prefix of what was written"
            );
            for id in &acked {
                assert!(
                    got_ids.contains(id),
                    "ack {k}, cut {cut}: acknowledged {id} lost"
                );
            }
            if let Some(at) = damaged_at {
                assert!(
                    got.end <= at,
                    "ack {k}, cut {cut}: a record over the damaged byte {at} was accepted (end {})",
                    got.end
                );
            }
            // The whole reader (files, segments, fold) on some of them.
            if i % 8 == 0 {
                let _ = std::fs::remove_dir_all(&recover_dir);
                std::fs::create_dir_all(&recover_dir).unwrap();
                std::fs::write(recover_dir.join("seg-00000001.log"), &image).unwrap();
                let c = key.map(|k| Aes256Gcm::new_from_slice(&k).unwrap());
                let (_, fold) = Journal::open(&recover_dir, c).unwrap();
                opened += 1;
                for id in &acked {
                    let e = fold.entries.get(*id).unwrap_or_else(|| {
                        panic!("ack {k}, cut {cut}: {id} missing after Journal::open")
                    });
                    assert_eq!(e.state, State::Pending);
                }
            }
        }
    }
    eprintln!(
        "journal power loss ({}): {} acknowledgements, {} records, {images} crash images, {opened} reopened",
        if key.is_some() { "sealed" } else { "plain" },
        acks.len(),
        written.len()
    );
}

#[test]
fn acknowledged_records_survive_a_power_cut_anywhere() {
    power_loss(None, 24);
}

#[test]
fn sealed_acknowledged_records_survive_a_power_cut_anywhere() {
    power_loss(Some([9; 32]), 42);
}
