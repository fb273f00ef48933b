//! Methods real OpenClaw clients call on every gateway (`openclaw logs`, `cron`, `system
//! event`, `approvals get`, `doctor`, the TUI's start-up reads…), answered in OpenClaw's
//! shapes.
//!
//! Where shardgate has the thing, the answer carries it (the log file, the host, the agents,
//! the models, queued system events). Where it has no such subsystem (cron, exec approvals,
//! questions, plugins, skills, hooks, usage accounting, talk, voice wake, self-update), the
//! answer is OpenClaw's own shape for "nothing there", never invented entries, so a client
//! shows an empty list instead of "unknown method".

use std::rc::Rc;

use serde_json::{json, Value};

use super::{catalog, logs_tail, system_info};
use crate::clock::now_ms;
use crate::protocol::error::GatewayError;
use crate::protocol::method::CompatMethod;
use crate::shard::GatewayShard;

/// At most this many system events wait per session (OpenClaw's bound).
const MAX_SYSTEM_EVENTS: usize = 20;

/// Runs one of these methods.
pub async fn call(
    shard: &Rc<GatewayShard>,
    m: CompatMethod,
    p: &Value,
) -> Result<Value, GatewayError> {
    let cfg = shard.config();
    let agent = cfg.agents.default_agent.as_str();
    Ok(match m {
        // Boxed: the file read's future would otherwise widen every connection-local
        // request's task (`spawned_futures_stay_small` in lib.rs).
        CompatMethod::LogsTail => return Box::pin(logs(shard, p)).await,
        CompatMethod::SystemInfo => system_info::info(shard),
        CompatMethod::Wake => return wake(shard, p),
        CompatMethod::SetHeartbeats => return set_heartbeats(p),
        CompatMethod::AgentsList => catalog::agents(cfg),
        CompatMethod::AgentIdentityGet => return catalog::identity(cfg, p),
        CompatMethod::ModelsList => catalog::models(),
        CompatMethod::DiagnosticsStability => {
            json!({"generatedAt": super::log_lines::rfc3339_now(), "capacity": 0, "count": 0, "dropped": 0,
                   "events": [], "summary": {"byType": {}}})
        }
        // No memory search: the probe is reported as not checked, as OpenClaw's is before a
        // deep probe, so `openclaw doctor` skips it rather than reporting a failure.
        CompatMethod::DoctorMemoryStatus => {
            json!({"agentId": agent, "searchRuntimeRegistered": false,
            "embedding": {"ok": false, "checked": false, "error": "shardgate has no memory search"}})
        }
        CompatMethod::CronList => cron_list(p),
        CompatMethod::CronStatus => {
            json!({"enabled": false, "triggersEnabled": false, "storage": "none",
                                "jobs": 0, "nextWakeAtMs": null})
        }
        CompatMethod::ExecApprovalsGet => json!({
            "path": "none (shardgate runs no exec tools)", "exists": false,
            // OpenClaw's hash of a missing file: "missing:" + sha256 of nothing.
            "hash": "missing:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "file": {"version": 1, "defaults": {}, "agents": {}},
        }),
        CompatMethod::PluginApprovalList => json!([]),
        CompatMethod::QuestionList => json!({"questions": []}),
        CompatMethod::CommandsList => json!({"commands": []}),
        CompatMethod::ToolsCatalog => json!({"agentId": agent, "profiles": [], "groups": []}),
        CompatMethod::SkillsStatus => json!({"agentId": agent, "skills": []}),
        CompatMethod::HooksStatus => json!({"hooks": []}),
        CompatMethod::UsageStatus => json!({"updatedAt": now_ms(), "providers": []}),
        CompatMethod::UsageCost => usage_cost(p),
        CompatMethod::TasksList => json!({"tasks": []}),
        CompatMethod::TaskSuggestionsList => json!({"suggestions": []}),
        CompatMethod::TalkConfig => json!({"config": {}}),
        CompatMethod::VoicewakeGet => json!({"triggers": []}),
        CompatMethod::UpdateStatus => json!({"sentinel": null, "updateAvailable": null}),
    })
}

/// `logs.tail`: the file read runs on a blocking thread, not on the shard.
async fn logs(shard: &Rc<GatewayShard>, p: &Value) -> Result<Value, GatewayError> {
    let q = logs_tail::TailParams::parse(p)?;
    let dir = shard.config().state_dir().join("logs");
    glommio::executor()
        .spawn_blocking(move || logs_tail::tail(&dir, q))
        .await
        .map_err(|e| GatewayError::LogReadFailed(e.to_string()))
}

/// `wake {mode, text, sessionKey?}` (`openclaw system event`): queues the text as a system
/// event for the session's next turn. `mode: "now"` would also run a heartbeat; heartbeats
/// are disabled here, as in an OpenClaw without them, so nothing runs and `last-heartbeat`
/// stays null.
fn wake(shard: &Rc<GatewayShard>, p: &Value) -> Result<Value, GatewayError> {
    let bad = |m: &str| GatewayError::InvalidParams(format!("invalid wake params: {m}"));
    match p.get("mode").and_then(Value::as_str) {
        Some("now" | "next-heartbeat") => {}
        Some(_) => return Err(bad("mode must be \"now\" or \"next-heartbeat\"")),
        None => return Err(bad("must have required property 'mode'")),
    }
    let text = match p.get("text").and_then(Value::as_str) {
        Some(t) if !t.trim().is_empty() => t.to_string(),
        _ => return Err(bad("must have required property 'text'")),
    };
    shard.broadcast(move |s| {
        let mut q = s.system_events().borrow_mut();
        if q.len() == MAX_SYSTEM_EVENTS {
            q.pop_front();
        }
        q.push_back(text.clone());
    });
    Ok(json!({"ok": true}))
}

/// `set-heartbeats {enabled}` (`openclaw system heartbeat enable|disable`): OpenClaw flips
/// its heartbeat runner's wake switch and echoes the value. shardgate has no heartbeat
/// runner, so there is nothing to switch: the answer is OpenClaw's, and `last-heartbeat`
/// stays null either way (as OpenClaw's does until a heartbeat has run).
fn set_heartbeats(p: &Value) -> Result<Value, GatewayError> {
    match p.get("enabled") {
        Some(Value::Bool(enabled)) => Ok(json!({"ok": true, "enabled": enabled})),
        _ => Err(GatewayError::InvalidParams(
            "invalid set-heartbeats params: enabled (boolean) required".into(),
        )),
    }
}

/// `cron.list {offset?, limit?}`: no cron here, so an empty, complete page. The CLI checks
/// a page as OpenClaw makes it: a revision, the offset it asked for, a limit of at least 1.
fn cron_list(p: &Value) -> Value {
    let int = |k: &str| p.get(k).and_then(Value::as_u64);
    json!({"jobs": [], "snapshotRevision": "none", "total": 0, "offset": int("offset").unwrap_or(0),
           "limit": int("limit").unwrap_or(200).clamp(1, 1000), "hasMore": false,
           "nextOffset": null, "deliveryPreviews": {}})
}

/// `usage.cost {days?}`: one row of zeros per day (shardgate's agents spend no tokens).
fn usage_cost(p: &Value) -> Value {
    let days = p
        .get("days")
        .and_then(Value::as_u64)
        .unwrap_or(30)
        .clamp(1, 366);
    let zero = json!({"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0, "totalTokens": 0,
                      "totalCost": 0, "inputCost": 0, "outputCost": 0, "cacheReadCost": 0,
                      "cacheWriteCost": 0, "missingCostEntries": 0});
    let today = now_ms().div_euclid(86_400_000);
    let daily: Vec<Value> = (0..days as i64)
        .rev()
        .map(|back| {
            let mut row = zero.clone();
            row["date"] = json!(civil_date(today - back));
            row
        })
        .collect();
    json!({"updatedAt": now_ms(), "days": days, "daily": daily, "totals": zero,
           "cacheStatus": {"status": "fresh", "cachedFiles": 0, "pendingFiles": 0, "staleFiles": 0}})
}

/// `YYYY-MM-DD` of a day counted from 1970-01-01 (H. Hinnant's civil-from-days).
fn civil_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(11_016), "2000-02-29");
        assert_eq!(civil_date(20_819), "2027-01-01");
        assert_eq!(civil_date(-1), "1969-12-31");
    }

    #[test]
    fn set_heartbeats_echoes_a_boolean_and_refuses_anything_else() {
        assert_eq!(
            set_heartbeats(&json!({"enabled": false})).unwrap(),
            json!({"ok": true, "enabled": false})
        );
        assert_eq!(
            set_heartbeats(&json!({"enabled": true})).unwrap(),
            json!({"ok": true, "enabled": true})
        );
        for bad in [json!({}), json!({"enabled": "yes"}), json!(null)] {
            assert!(matches!(
                set_heartbeats(&bad),
                Err(GatewayError::InvalidParams(m)) if m.contains("enabled (boolean) required")
            ));
        }
    }

    #[test]
    fn usage_cost_has_one_zero_row_per_day_ending_today() {
        let v = usage_cost(&json!({"days": 3}));
        let daily = v["daily"].as_array().unwrap();
        assert_eq!(daily.len(), 3);
        assert_eq!(
            daily[2]["date"],
            civil_date(now_ms().div_euclid(86_400_000))
        );
        assert_eq!(v["totals"]["totalTokens"], 0);
    }
}
