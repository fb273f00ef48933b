//! What the gateway's agents are and run on: `agents.list`, `agent.identity.get`,
//! `models.list`, in OpenClaw's shapes and from shardgate's own configuration.
//!
//! The agents are the default agent plus every agent named in `agents.bindings`; any other
//! agent id is accepted by the run path too (it runs the echo agent), but only these are
//! known by name. The model is the one every run uses: the built-in `echo` (or a worker
//! running the same protocol), listed as `shardgate/echo`.

use serde_json::{json, Value};

use crate::config::{AgentKind, Config};
use crate::protocol::error::GatewayError;

/// The known agent ids, the default first.
fn agent_ids(cfg: &Config) -> Vec<&str> {
    let default = cfg.agents.default_agent.as_str();
    let mut ids = vec![default];
    ids.extend(
        cfg.agents
            .bindings
            .keys()
            .map(String::as_str)
            .filter(|k| *k != default),
    );
    ids
}

/// The model an agent runs: the echo agent, or a worker speaking for it.
fn model_of(cfg: &Config, id: &str) -> &'static str {
    match cfg.agents.bindings.get(id).and_then(|b| b.kind) {
        Some(AgentKind::Worker) => "shardgate/worker",
        Some(AgentKind::Echo) | None => "shardgate/echo",
    }
}

/// `agents.list`
pub fn agents(cfg: &Config) -> Value {
    let agents: Vec<Value> = agent_ids(cfg)
        .into_iter()
        .map(|id| json!({"id": id, "name": id, "model": {"primary": model_of(cfg, id)}}))
        .collect();
    json!({"defaultId": cfg.agents.default_agent, "mainKey": "main", "scope": "per-sender",
           "selectionRequired": false, "agents": agents})
}

/// `agent.identity.get {agentId?}`: the name and avatar a client shows for an agent. No agent
/// here has a configured name, so the name is its id (OpenClaw: `nameSource: "default"`).
pub fn identity(cfg: &Config, p: &Value) -> Result<Value, GatewayError> {
    let id = match p.get("agentId") {
        None | Some(Value::Null) => cfg.agents.default_agent.clone(),
        Some(Value::String(s)) => s.trim().to_ascii_lowercase(),
        Some(_) => String::new(),
    };
    if !crate::protocol::session_key::valid_agent_id(&id) {
        return Err(GatewayError::InvalidParams(
            "invalid agent.identity.get params: agentId must be an agent id".into(),
        ));
    }
    let avatar = id
        .chars()
        .next()
        .map(|c| c.to_ascii_uppercase().to_string());
    Ok(json!({"agentId": id, "name": id, "nameSource": "default", "avatar": avatar}))
}

/// `models.list` (with `published-model-catalog`): the model runs use, with its details.
pub fn models() -> Value {
    json!({"models": [{"id": "echo", "name": "echo", "provider": "shardgate", "input": ["text"],
                       "available": true, "local": true}]})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_are_the_default_then_the_bound_ones() {
        let mut cfg = Config::default();
        cfg.agents
            .bindings
            .insert("helper".into(), Default::default());
        let v = agents(&cfg);
        let ids: Vec<&str> = v["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["main", "helper"]);
        assert_eq!(v["defaultId"], "main");
        let i = identity(&cfg, &json!({"agentId": "Helper"})).unwrap();
        assert_eq!(i["agentId"], "helper");
        assert_eq!(i["avatar"], "H");
        assert!(identity(&cfg, &json!({"agentId": 3})).is_err());
    }
}
