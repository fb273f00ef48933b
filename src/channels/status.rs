//! What `channels.status` and `health` say of the chat channels: every platform channel as an
//! OpenClaw account of its platform, its counters summed over the shards, its connection
//! state from the shard that drives it.

use std::rc::Rc;

use serde_json::{json, Value};

use crate::clock::now_ms;
use crate::shard::GatewayShard;

/// OpenClaw's label of a platform.
fn label(platform: &str) -> &str {
    match platform {
        "telegram" => "Telegram",
        "discord" => "Discord",
        other => other,
    }
}

/// `channels.status`: every platform channel as an OpenClaw account of its platform
/// (`channelAccounts.telegram[{accountId: <name>, running, connected, lastError, mode, …}]`),
/// with its counters summed over the shards and its connection state from shard 0.
pub async fn status(shard: &Rc<GatewayShard>, only: Option<&str>) -> Value {
    let now = now_ms();
    let per = shard.gather(move |s| s.channels().json(now)).await;
    status_of(shard, &per, only)
}

/// [`status`] from the shards' parts.
pub fn status_of(shard: &GatewayShard, per: &[Value], only: Option<&str>) -> Value {
    let mut accounts: serde_json::Map<String, Value> = serde_json::Map::new();
    let mut defaults = serde_json::Map::new();
    let mut summaries = serde_json::Map::new();
    let mut labels = serde_json::Map::new();
    let mut order: Vec<String> = Vec::new();
    let mut issues = Vec::new();
    for (name, cfg) in &shard.config().channels {
        let Some(platform) = cfg.kind.platform() else {
            continue;
        };
        if only.is_some_and(|o| o != platform && o != name) {
            continue;
        }
        let mut acct = per
            .iter()
            .find_map(|p| p["links"].get(name).cloned())
            .unwrap_or_else(|| {
                // Not started (yet): what the config says.
                json!({"platform": platform, "state": "stopped", "running": false, "connected": false,
                       "stopReason": "not started"})
            });
        let sum = |k: &str| -> u64 {
            per.iter()
                .filter_map(|p| p["counters"][name.as_str()][k].as_u64())
                .sum()
        };
        let out_at = per
            .iter()
            .filter_map(|p| p["lastOutboundAt"][name.as_str()].as_i64())
            .max();
        acct["accountId"] = json!(name);
        acct["enabled"] = json!(true);
        acct["configured"] = json!(true);
        acct["lastOutboundAt"] = json!(out_at);
        acct["messages"] = json!({"in": sum("in"), "out": sum("out"), "errors": sum("errors"),
                                  "duplicates": sum("duplicates"), "filtered": sum("filtered"),
                                  "rateLimited": sum("rateLimited"), "reconnects": sum("reconnects")});
        if let Some(why) = issue(&acct) {
            issues.push(
                json!({"channel": platform, "accountId": name, "kind": "runtime", "message": why}),
            );
        }
        if !order.iter().any(|o| o == platform) {
            order.push(platform.to_string());
            labels.insert(platform.into(), json!(label(platform)));
            // The platform's default account: the channel named like it, else the first.
            defaults.insert(platform.into(), json!(name));
            summaries.insert(
                platform.into(),
                json!({"configured": true, "running": acct["running"], "lastStartAt": acct["lastStartAt"],
                       "lastStopAt": Value::Null, "lastError": acct["lastError"],
                       "tokenSource": acct["tokenSource"], "mode": acct["mode"], "lastProbeAt": Value::Null}),
            );
        }
        if name == platform {
            defaults.insert(platform.into(), json!(name));
        }
        if let Some(a) = accounts
            .entry(platform.to_string())
            .or_insert_with(|| json!([]))
            .as_array_mut()
        {
            a.push(acct);
        }
    }
    json!({
        "ts": now_ms(),
        "channelOrder": order,
        "channelLabels": labels,
        "channels": summaries,
        "channelAccounts": accounts,
        "channelDefaultAccountId": defaults,
        "statusIssues": issues,
    })
}

/// What an operator should hear of an account that is not connected (OpenClaw's
/// `statusIssues`, printed under "Warnings:" by `openclaw channels status`).
fn issue(acct: &Value) -> Option<String> {
    let err = acct["lastError"].as_str().unwrap_or("no error recorded");
    match acct["state"].as_str()? {
        "stopped" => Some(format!(
            "stopped: {}",
            acct["stopReason"].as_str().unwrap_or(err)
        )),
        "reconnecting" => Some(format!(
            "reconnecting in {} ms (attempt {}): {err}",
            acct["nextAttemptInMs"].as_i64().unwrap_or(0),
            acct["reconnectAttempts"].as_u64().unwrap_or(0) + 1
        )),
        _ => None,
    }
}

/// `health`'s `channels`, `channelOrder` and `channelLabels` from the shards' brief states
/// ([`crate::channels::state::ChannelsState::health_json`]), in OpenClaw's shape: per
/// platform a summary with its `accounts` and a `healthState` (`healthy` when connected, else
/// the state), which `openclaw health` prints as `Telegram: healthy`.
pub fn health(shard: &GatewayShard, parts: &[Value]) -> (Value, Value, Value) {
    let mut channels = serde_json::Map::new();
    let mut order = Vec::new();
    let mut labels = serde_json::Map::new();
    for (name, cfg) in &shard.config().channels {
        let Some(platform) = cfg.kind.platform() else {
            continue;
        };
        let brief = parts.iter().find_map(|p| p.get(name.as_str()));
        let state = brief.and_then(|b| b["state"].as_str()).unwrap_or("stopped");
        let health = if state == "connected" {
            "healthy"
        } else {
            state
        };
        let acct = json!({"accountId": name, "enabled": true, "configured": true,
                          "running": state != "stopped", "connected": state == "connected",
                          "healthState": health,
                          "lastError": brief.map_or(Value::Null, |b| b["lastError"].clone())});
        if !order.iter().any(|o| o == platform) {
            order.push(platform.to_string());
            labels.insert(platform.into(), json!(label(platform)));
            let mut summary = acct.clone();
            summary["accounts"] = json!({});
            channels.insert(platform.into(), summary);
        }
        let summary = &mut channels[platform];
        // The platform's line shows its worst account.
        if health != "healthy" && summary["healthState"] == "healthy" {
            for k in [
                "accountId",
                "running",
                "connected",
                "healthState",
                "lastError",
            ] {
                summary[k] = acct[k].clone();
            }
        }
        summary["accounts"][name.as_str()] = acct;
    }
    (Value::Object(channels), json!(order), Value::Object(labels))
}
