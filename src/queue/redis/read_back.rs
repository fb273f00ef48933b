//! Reading a slot back from Redis: its work stream (admissions not finished), its dead
//! letters and its kept answers, folded for the delivery core to restore. Used on start (a
//! single gateway reads every slot) and when a cluster member gains a slot's lease.

use serde_json::Value;
use shardgate_redis::{Client, Value as RValue};

use super::keys::Keys;
use crate::delivery::record::{Fold, Record};

/// A run met in a slot's streams.
#[derive(Debug)]
pub(super) struct ReadRun {
    /// Its run id.
    pub(super) id: String,
    /// Its session key.
    pub(super) session: String,
    /// Still in the work stream (not finished); else a dead letter.
    pub(super) pending: bool,
}

/// Folds `slot`'s records of the sessions `mine` accepts into `fold`: work entries
/// (pending), dead letters, kept answers. A gateway that gains the slot's lease reads it
/// this way before serving it.
pub(super) async fn read_slot(
    client: &Client,
    keys: &Keys,
    slot: u32,
    mine: &impl Fn(&str) -> bool,
    fold: &mut Fold,
) -> Result<Vec<ReadRun>, shardgate_redis::Error> {
    let mut runs = Vec::new();
    for fields in xrange(client, &keys.work(slot)).await? {
        let Some(r) = field(&fields, "r").and_then(parse_record) else {
            continue;
        };
        if let Record::Acc { id, s, .. } = &r {
            if mine(s) {
                runs.push(ReadRun {
                    id: id.clone(),
                    session: s.clone(),
                    pending: true,
                });
                fold.apply(r);
            }
        }
    }
    for fields in xrange(client, &keys.dead(slot)).await? {
        let acc = field(&fields, "acc").and_then(parse_record);
        let dead = field(&fields, "r").and_then(parse_record);
        if let (Some(acc @ Record::Acc { .. }), Some(dead)) = (acc, dead) {
            let Record::Acc { id, s, .. } = &acc else {
                continue;
            };
            if mine(s) {
                runs.push(ReadRun {
                    id: id.clone(),
                    session: s.clone(),
                    pending: false,
                });
                fold.apply(acc);
                fold.apply(dead);
            }
        }
    }
    let res = client
        .call(&[b"HGETALL", keys.results(slot).as_bytes()])
        .await?;
    for (_, v) in pairs(&res) {
        let Some(v) = v
            .as_str()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
        else {
            continue;
        };
        let Some(s) = v["s"].as_str() else { continue };
        if !mine(s) {
            continue;
        }
        if let Ok(r) = serde_json::from_value::<Record>(v["r"].clone()) {
            fold.apply(r);
        }
    }
    Ok(runs)
}

/// All entries of a stream, as their field lists.
async fn xrange(client: &Client, key: &str) -> Result<Vec<Vec<RValue>>, shardgate_redis::Error> {
    let mut out = Vec::new();
    let mut start = "-".to_string();
    loop {
        let v = client
            .call(&[
                b"XRANGE",
                key.as_bytes(),
                start.as_bytes(),
                b"+",
                b"COUNT",
                b"1000",
            ])
            .await?;
        let entries = v.as_array().unwrap_or(&[]);
        let n = entries.len();
        for e in entries {
            let Some([id, fields]) = e.as_array().and_then(|a| <&[RValue; 2]>::try_from(a).ok())
            else {
                continue;
            };
            if let Some(id) = id.as_str() {
                start = format!("({id}");
            }
            out.push(fields.as_array().unwrap_or(&[]).to_vec());
        }
        if n < 1000 {
            return Ok(out);
        }
    }
}

/// The value of `name` in a stream entry's field list.
fn field<'a>(fields: &'a [RValue], name: &str) -> Option<&'a str> {
    fields
        .chunks(2)
        .find(|p| p[0].as_str() == Some(name))
        .and_then(|p| p.get(1))
        .and_then(RValue::as_str)
}

fn parse_record(s: &str) -> Option<Record> {
    serde_json::from_str(s).ok()
}

/// Key/value pairs of a map reply (RESP3) or a flat array (RESP2 shape).
fn pairs(v: &RValue) -> Vec<(RValue, RValue)> {
    match v {
        RValue::Map(m) => m.clone(),
        _ => v
            .as_array()
            .unwrap_or(&[])
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (c[0].clone(), c[1].clone()))
            .collect(),
    }
}
