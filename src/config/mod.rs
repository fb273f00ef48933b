//! The configuration tree: one typed source for every knob.
//!
//! Loading order (later wins): built-in defaults ← JSON5 file (`--config`, the seed article's
//! key names, OpenClaw's `openclaw.json` shape) ← environment ← command-line flags.
//! An unknown key is a warning naming its path; a value of the wrong type or out of bounds
//! refuses the start with the key path and the reason ([`ConfigError`]).

mod channels;
mod cluster;
mod depth;
mod duration;
mod redis;
mod security;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use channels::{
    ChannelConfig, ChannelKind, TelegramMode, DISCORD_API_BASE, DISCORD_GATEWAY_URL,
    DISCORD_INTENTS, TELEGRAM_API_BASE,
};
pub use cluster::{ClusterMode, ClusteringConfig};
pub use duration::Millis;
pub use redis::{parse_url as parse_redis_url, RedisQueueConfig, RedisTarget};
pub use security::*;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Config {
    /// Listener, auth, protocol limits.
    pub gateway: GatewayConfig,
    /// Number of shards: `"auto"` (one per CPU) or a number. Default `"auto"`.
    pub shards: Shards,
    /// Where paired devices, the singleton lock and journals live.
    /// Default `$SHARDGATE_STATE_DIR` or `~/.shardgate`.
    pub state_dir: Option<PathBuf>,
    /// Agents and the built-in echo agent.
    pub agents: AgentsConfig,
    /// The delivery queue (seed article `queue`).
    pub queue: QueueConfig,
    /// Idempotency (seed article `deduplication`).
    pub deduplication: DedupConfig,
    /// Per-session ordering (seed article `ordering`).
    pub ordering: OrderingConfig,
    /// Network knobs (seed article `network`).
    pub network: NetworkConfig,
    /// Outbound channels for `send`, by name (`log` is built in).
    pub channels: std::collections::BTreeMap<String, ChannelConfig>,
    /// Encryption at rest (seed article `storage`).
    pub storage: StorageConfig,
    /// Who may connect and how much they may ask (seed article `access`).
    pub access: AccessConfig,
    /// Transport security (seed article `security`).
    pub security: SecurityConfig,
    /// Connection pools (seed article `connections`).
    pub connections: ConnectionsConfig,
    /// Alerts and sinks (seed article `monitoring`).
    pub monitoring: MonitoringConfig,
    /// Memory caps (seed article `memory`).
    pub memory: MemoryConfig,
}

/// `connections`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct ConnectionsConfig {
    /// The agent worker pool.
    pub pool: PoolConfig,
}

/// `connections.pool`: how runs are spread over agent workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PoolConfig {
    /// Most workers used per agent (the first by id). Default 100.
    pub max_size: usize,
    /// Workers per agent below which `workers.status` reports the pool degraded. Default 0.
    pub min_size: usize,
    /// Longest wait for a live worker, and for its `worker.pong`. Default "5s".
    pub connection_timeout: Millis,
    /// Ping a worker (`worker.ping` → `worker.pong`) before handing it a run. Default true.
    pub test_on_borrow: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_size: 100,
            min_size: 0,
            connection_timeout: Millis(5_000),
            test_on_borrow: true,
        }
    }
}

/// `gateway.health`: dependency checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HealthConfig {
    /// Period of the checks. Default "30s".
    pub check_interval: Millis,
    /// Consecutive failures before a dependency is unhealthy. Default 3.
    pub failure_threshold: u32,
    /// Consecutive successes before it is healthy again. Default 2.
    pub success_threshold: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            check_interval: Millis(30_000),
            failure_threshold: 3,
            success_threshold: 2,
        }
    }
}

/// `monitoring`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct MonitoringConfig {
    /// How often alert rules are evaluated. Default "30s".
    pub evaluation_interval: Millis,
    /// Alert rules: `high_latency` (p95 ms > threshold, default 1000), `connection_loss`
    /// (connections < threshold × 0.5), `queue_backlog`, `memory_pressure`. `gateway_down` is
    /// raised from outside by `shardgate watch`.
    pub alerts: Vec<AlertRule>,
    /// Notification sinks by name.
    pub sinks: std::collections::BTreeMap<String, SinkConfig>,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        MonitoringConfig {
            evaluation_interval: Millis(30_000),
            alerts: Vec::new(),
            sinks: Default::default(),
        }
    }
}

/// `monitoring.alerts[]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct AlertRule {
    /// `high_latency` | `connection_loss` | `queue_backlog` | `memory_pressure`.
    pub name: String,
    /// Rule threshold (ms for latency, connections for connection_loss, messages for backlog).
    pub threshold: Option<f64>,
    /// `critical` | `error` | `warning` | `info`.
    pub severity: String,
    /// Sink names to notify.
    pub channels: Vec<String>,
}

/// `monitoring.sinks.<name>`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SinkConfig {
    /// What the sink speaks. Required.
    pub kind: SinkKind,
    /// `http://…` endpoint.
    #[serde(default)]
    pub url: String,
    /// PagerDuty routing key. Secret: redacted.
    #[serde(default)]
    pub routing_key: Option<String>,
}

/// `monitoring.sinks.<name>.kind`: the body an alert is posted as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// Generic JSON.
    Webhook,
    /// A Slack incoming-webhook payload.
    Slack,
    /// PagerDuty Events v2.
    Pagerduty,
}

impl std::str::FromStr for SinkKind {
    type Err = String;
    /// The config spelling (`shardgate watch --sink-kind`).
    fn from_str(s: &str) -> Result<SinkKind, String> {
        match s {
            "webhook" => Ok(SinkKind::Webhook),
            "slack" => Ok(SinkKind::Slack),
            "pagerduty" => Ok(SinkKind::Pagerduty),
            other => Err(format!(
                "unknown sink kind {other:?} (webhook, slack, pagerduty)"
            )),
        }
    }
}

/// `memory`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct MemoryConfig {
    /// Caps.
    pub limits: MemoryLimits,
    /// Cache bounds.
    pub caching: CachingConfig,
}

/// `memory.caching`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct CachingConfig {
    /// Sessions: idle ones expire after `ttl`; past `maxSize` (all shards) the oldest idle go.
    pub session: CacheLimit,
    /// Messages: per-session history bound (`maxSize` overrides `agents.historyLimit`) and age.
    pub message: CacheLimit,
}

/// One cache's bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct CacheLimit {
    /// Most entries. Default unlimited.
    pub max_size: Option<usize>,
    /// Longest idle life. Default forever.
    pub ttl: Option<Millis>,
}

/// `memory.limits`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct MemoryLimits {
    /// Resident set size cap, bytes (`"512mb"` accepted). Above 90% the gateway sheds load
    /// (new connections 503, new runs OVERLOADED) until below 80%. Default none.
    #[serde(deserialize_with = "de_bytes", serialize_with = "ser_bytes")]
    pub max_rss: Option<u64>,
}

fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("expected a size like \"512mb\", got {s:?}"))?;
    let m = match unit.trim() {
        "" | "b" => 1,
        "kb" | "k" | "kib" => 1 << 10,
        "mb" | "m" | "mib" => 1 << 20,
        "gb" | "g" | "gib" => 1 << 30,
        u => return Err(format!("unknown size unit {u:?} (b, kb, mb, gb)")),
    };
    n.checked_mul(m)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

fn de_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(u64),
        S(String),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::N(n)) => Ok(Some(n)),
        Some(Raw::S(s)) => parse_bytes(&s).map(Some).map_err(serde::de::Error::custom),
    }
}

fn ser_bytes<S: serde::Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        None => s.serialize_none(),
        Some(n) => s.serialize_u64(*n),
    }
}

/// `storage`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct StorageConfig {
    /// `"aes-256-gcm"` seals the queue journal and dead letters with a key kept in
    /// `<stateDir>/journal.key` (created on first start, mode 0600). Default none.
    pub encryption: Option<String>,
}

/// `agents.bindings.<agentId>.kind`: what runs the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentKind {
    /// The built-in echo agent.
    Echo,
    /// Connected agent workers (`client.mode: "worker"`).
    Worker,
}

/// `agents.bindings.<agentId>`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct AgentBinding {
    /// What runs the agent. Default `echo`.
    pub kind: Option<AgentKind>,
    /// Runs of this agent at once across the gateway (split evenly over shards). Default
    /// unlimited.
    pub max_concurrent: Option<usize>,
    /// Testing only, dangerous in production: fail the first N attempts of every run
    /// (exercises retry and dead letters). Default 0.
    pub dangerously_fail_first_attempts: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            gateway: GatewayConfig::default(),
            shards: Shards::Auto,
            state_dir: None,
            agents: AgentsConfig::default(),
            queue: QueueConfig::default(),
            deduplication: DedupConfig::default(),
            ordering: OrderingConfig::default(),
            network: NetworkConfig::default(),
            channels: Default::default(),
            storage: StorageConfig::default(),
            access: AccessConfig::default(),
            security: SecurityConfig::default(),
            connections: ConnectionsConfig::default(),
            monitoring: MonitoringConfig::default(),
            memory: MemoryConfig::default(),
        }
    }
}

/// `shards`: `"auto"` or a count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shards {
    /// One shard per available CPU.
    Auto,
    /// Exactly this many shards (1..=256).
    Count(usize),
}

impl Serialize for Shards {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Shards::Auto => s.serialize_str("auto"),
            Shards::Count(n) => s.serialize_u64(*n as u64),
        }
    }
}

impl<'de> Deserialize<'de> for Shards {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::S(s) if s == "auto" => Ok(Shards::Auto),
            Raw::S(s) => s
                .parse::<u64>()
                .map_err(|_| {
                    serde::de::Error::custom(format!("expected \"auto\" or a number, got {s:?}"))
                })
                .and_then(|n| Shards::count(n).map_err(serde::de::Error::custom)),
            Raw::N(n) => Shards::count(n).map_err(serde::de::Error::custom),
        }
    }
}

impl Shards {
    fn count(n: u64) -> Result<Shards, String> {
        if (1..=256).contains(&n) {
            Ok(Shards::Count(n as usize))
        } else {
            Err(format!("shard count must be 1..=256, got {n}"))
        }
    }

    /// The number of shards to start.
    pub fn resolve(self) -> usize {
        match self {
            Shards::Auto => shards::pool::available_cpus(),
            Shards::Count(n) => n,
        }
    }
}

/// `gateway.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct GatewayConfig {
    /// Listen address. Default `127.0.0.1` (loopback only).
    pub host: String,
    /// Listen port. Default 18789 (OpenClaw's). 0 picks a free port (tests).
    pub port: u16,
    /// Shared authentication.
    pub auth: AuthConfig,
    /// Interval of `tick` events, ms. Default 30000. Clients close after 2× silence.
    pub tick_interval_ms: u64,
    /// Time allowed from TCP accept to `hello-ok`, ms. Default 10000.
    pub handshake_timeout_ms: u64,
    /// Longest a write may wait for a peer that stopped reading (its socket full), ms; then
    /// the connection is dropped. Default 30000.
    pub write_timeout_ms: u64,
    /// After answering a UI client's `chat.send` (`client.mode` "ui" or "webchat": OpenClaw's
    /// TUI, the Control UI), that connection's later frames wait this long, ms, so the client
    /// has handled the answer before the run's first event. Without it the TUI stays
    /// "waiting" after an instant (echo) reply. Default 50: longer than a UI's busy spell
    /// after a send (5 ms did it here) and too short for a person to see; raise it on a
    /// heavily loaded host, 0 turns the pause off. Other clients never wait.
    pub ui_chat_ack_pause_ms: u64,
    /// Largest message before authentication, bytes. Default 65536.
    pub preauth_max_payload: usize,
    /// Largest message after `hello-ok`, bytes (advertised as `policy.maxPayload`).
    /// Default 26214400 like OpenClaw.
    pub max_payload: usize,
    /// Per-connection send buffer bound, bytes (`policy.maxBufferedBytes`). Over it droppable
    /// events are skipped and anything else closes the connection 1008 "slow consumer".
    /// Default 52428800.
    pub max_buffered_bytes: usize,
    /// Unauthenticated sockets allowed per client IP. Default 32.
    pub max_unauthenticated_per_ip: usize,
    /// Failed shared-secret attempts per IP per minute before `AUTH_RATE_LIMITED`
    /// (loopback exempt). Default 10.
    pub auth_failures_per_minute: u32,
    /// Longest wait for in-flight runs at shutdown, ms. Default 10000.
    pub drain_timeout_ms: u64,
    /// Serve a plain WebSocket echo at `/echo` (conformance testing only). Default false.
    pub dangerously_enable_ws_echo: bool,
    /// Serve the fault-injection routes under `/dangerously/` (tests only: they let anyone
    /// who reaches the port stall a shard). Default false.
    pub dangerously_enable_test_hooks: bool,
    /// Node command policy.
    pub nodes: NodesConfig,
    /// Dependency health checks.
    pub health: HealthConfig,
    /// Capability negotiation: providers per capability (seed `gateway.nodeCapabilities`).
    pub node_capabilities: std::collections::BTreeMap<String, CapabilityConfig>,
    /// Device pairing policies (seed article `gateway.pairing`).
    pub pairing: PairingConfig,
    /// TLS on the gateway port.
    pub tls: TlsConfig,
    /// Browser (Control UI) settings.
    pub control_ui: ControlUiConfig,
    /// Several gateways on one Redis (seed `gateway.clustering`; `crate::cluster`).
    pub clustering: ClusteringConfig,
}

/// `gateway.nodeCapabilities.<capability>`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct CapabilityConfig {
    /// Providers in order: `node:<nodeType|family|platform|name>`, `host`, `cloud`.
    pub providers: Vec<String>,
    /// Provider tried after all others.
    pub fallback: Option<String>,
    /// `local_first` (default: nodes and host before cloud) or `cloud_first`.
    pub preference: Option<String>,
    /// A required capability with no live provider is reported as such.
    pub required: bool,
}

/// `gateway.nodes`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct NodesConfig {
    /// Commands a node may put up for approval beyond its platform's defaults (OpenClaw's
    /// `gateway.nodes.commands.allow`; see `node::policy`). `prefix*` matches a prefix, `*`
    /// anything. Commands OpenClaw deems dangerous (camera.snap, screen.record, sms.send, …)
    /// and plugin ones (file.write, dir.fetch, …) are admitted only when listed here.
    pub allow_commands: Vec<String>,
    /// Commands never admitted nor invoked, even when declared and approved.
    pub deny_commands: Vec<String>,
    /// Nodes need an operator's approval (`node.pair.*`) of their command surface before any
    /// command is invoked (OpenClaw always does this). Default true. A new node files a
    /// request at connect and has no effective command until approved; a node declaring more
    /// than its approval keeps the approved part meanwhile. Setting it false lets any node
    /// that passed device pairing be invoked with whatever it declares.
    pub require_pairing: bool,
}

impl Default for NodesConfig {
    fn default() -> Self {
        NodesConfig {
            allow_commands: Vec::new(),
            deny_commands: Vec::new(),
            require_pairing: true,
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            host: "127.0.0.1".into(),
            port: 18789,
            auth: AuthConfig::default(),
            tick_interval_ms: 30_000,
            handshake_timeout_ms: 10_000,
            write_timeout_ms: 30_000,
            ui_chat_ack_pause_ms: 50,
            preauth_max_payload: 64 * 1024,
            max_payload: 26_214_400,
            max_buffered_bytes: 52_428_800,
            max_unauthenticated_per_ip: 32,
            auth_failures_per_minute: 10,
            drain_timeout_ms: 10_000,
            dangerously_enable_ws_echo: false,
            dangerously_enable_test_hooks: false,
            nodes: NodesConfig::default(),
            health: HealthConfig::default(),
            node_capabilities: Default::default(),
            pairing: PairingConfig::default(),
            tls: TlsConfig::default(),
            control_ui: ControlUiConfig::default(),
            clustering: ClusteringConfig::default(),
        }
    }
}

/// `gateway.auth`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct AuthConfig {
    /// `none | token | password`. Default: `token` when a token is set, else `none`.
    pub mode: Option<AuthMode>,
    /// Shared token (also `OPENCLAW_GATEWAY_TOKEN`, `SHARDGATE_TOKEN`). Secret: redacted.
    pub token: Option<String>,
    /// Shared password (also `OPENCLAW_GATEWAY_PASSWORD`). Secret: redacted.
    pub password: Option<String>,
    /// A device-less CLI operator (client `cli`/`cli`, or the local backend
    /// `gateway-client`/`backend`) that authenticated with the shared secret from a direct
    /// loopback peer, without a browser `Origin`, keeps its requested scopes (OpenClaw's
    /// behaviour, which the `openclaw gateway call` CLI relies on). Any other device-less
    /// operator (UIs, `gateway probe`) gets no scopes either way. When false, none keeps
    /// them. Default true.
    pub loopback_shared_secret_keeps_scopes: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: None,
            token: None,
            password: None,
            loopback_shared_secret_keeps_scopes: true,
        }
    }
}

/// Shared-secret authentication mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Anyone may connect (loopback deployments).
    None,
    /// `connect.params.auth.token` must match.
    Token,
    /// `connect.params.auth.password` must match.
    Password,
}

impl AuthMode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::None => "none",
            AuthMode::Token => "token",
            AuthMode::Password => "password",
        }
    }
}

impl AuthConfig {
    /// The effective mode.
    pub fn effective_mode(&self) -> AuthMode {
        match self.mode {
            Some(m) => m,
            None if self.token.is_some() => AuthMode::Token,
            None if self.password.is_some() => AuthMode::Password,
            None => AuthMode::None,
        }
    }
}

/// `agents`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct AgentsConfig {
    /// The agent used when a request names none. Default `main`.
    pub default_agent: String,
    /// The built-in echo agent.
    pub echo: EchoConfig,
    /// Longest run before `AGENT_TIMEOUT`, ms. Default 600000.
    pub run_timeout_ms: u64,
    /// Messages kept per session for `chat.history`. Default 200.
    pub history_limit: usize,
    /// Per-agent settings by agent id.
    pub bindings: std::collections::BTreeMap<String, AgentBinding>,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        AgentsConfig {
            default_agent: "main".into(),
            echo: EchoConfig::default(),
            run_timeout_ms: 600_000,
            history_limit: 200,
            bindings: Default::default(),
        }
    }
}

/// `agents.echo`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct EchoConfig {
    /// Delay before each streamed word, ms (realistic streaming in tests). Default 0.
    pub delta_delay_ms: u64,
}

/// `queue` (seed article).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct QueueConfig {
    /// Default true.
    pub enabled: bool,
    /// `memory` (default) | `journal` | `redis` | `kafka`.
    pub backend: String,
    /// Most queued messages before `QUEUE_FULL`. Default 10000.
    pub max_size: usize,
    /// Retry of failed dispatches.
    pub retry_policy: RetryPolicy,
    /// Dead letters.
    pub dead_letter: DeadLetterConfig,
    /// The Redis backend (`backend: "redis"`).
    pub redis: RedisQueueConfig,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            enabled: true,
            backend: "memory".into(),
            max_size: 10_000,
            retry_policy: RetryPolicy::default(),
            dead_letter: DeadLetterConfig::default(),
            redis: RedisQueueConfig::default(),
        }
    }
}

/// `queue.retryPolicy`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Default 3.
    pub max_attempts: u32,
    /// Delay growth between attempts. Default `exponential`.
    pub backoff: Backoff,
    /// Default "1s".
    pub initial_delay: Millis,
    /// Default "30s".
    pub max_delay: Millis,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            backoff: Backoff::Exponential,
            initial_delay: Millis(1_000),
            max_delay: Millis(30_000),
        }
    }
}

/// `queue.retryPolicy.backoff`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backoff {
    /// Doubling per attempt, up to `maxDelay`.
    Exponential,
    /// Always `initialDelay`.
    Fixed,
}

/// `queue.deadLetter`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DeadLetterConfig {
    /// Default true.
    pub enabled: bool,
    /// Default "7d".
    pub max_age: Millis,
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        DeadLetterConfig {
            enabled: true,
            max_age: Millis(7 * 24 * 3_600_000),
        }
    }
}

/// `deduplication`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DedupConfig {
    /// What identifies a duplicate. Default `message_id`.
    pub strategy: DedupStrategy,
    /// Default "5m".
    pub window: Millis,
    /// Where the window is kept. Default `memory`.
    pub storage: DedupStorage,
    /// Entries per shard before the oldest is evicted. Default 65536.
    pub capacity: usize,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            strategy: DedupStrategy::MessageId,
            window: Millis(300_000),
            storage: DedupStorage::Memory,
            capacity: 65_536,
        }
    }
}

/// `deduplication.strategy`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DedupStrategy {
    /// `method:idempotencyKey`: a retry with the same key joins the running call or replays
    /// its answer (the only strategy OpenClaw clients need: they send the key).
    MessageId,
}

/// `deduplication.storage`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DedupStorage {
    /// A ring per owner shard (answers of finished runs are also replayed from the journal
    /// after a restart when `queue.backend` is `journal`).
    Memory,
}

/// `ordering.guarantee`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderingGuarantee {
    /// One FIFO lane per session on its owner shard; sessions run independently.
    PerSession,
}

/// `ordering`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct OrderingConfig {
    /// What is kept in order. Default `per_session`.
    pub guarantee: OrderingGuarantee,
    /// Runs waiting per session before a retryable refusal. Default 100.
    pub buffer_size: usize,
    /// Default "10s".
    pub timeout: Millis,
}

impl Default for OrderingConfig {
    fn default() -> Self {
        OrderingConfig {
            guarantee: OrderingGuarantee::PerSession,
            buffer_size: 100,
            timeout: Millis(10_000),
        }
    }
}

/// `network`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct NetworkConfig {
    /// `network.websocket`
    pub websocket: WebSocketNetConfig,
    /// How long a shard with nothing to do keeps polling its rings before it sleeps, µs
    /// (0 = sleep at once). Trades CPU for latency: see tuning.md "Busy polling". Only
    /// pinned shards spin. Default [`DEFAULT_SPIN_BEFORE_PARK_US`].
    pub spin_before_park_us: u64,
    /// How many requests one shard may have waiting for another shard that is not keeping
    /// up (messages, per peer). Past it a request to a session owned there is answered
    /// `UNAVAILABLE` (`SHARD_BUSY`, `retryAfterMs`) instead of growing memory without limit;
    /// answers already owed get 4 times as much room. Each waiting message is one pointer plus
    /// the request (a few hundred bytes). Default [`DEFAULT_MESH_OUTBOX_LIMIT`].
    pub mesh_outbox_limit: usize,
}

/// Requests waiting for one slow peer shard: at tens of thousands of requests a second a
/// shard drains this in a fraction of a millisecond, so only a stuck owner reaches it.
pub const DEFAULT_MESH_OUTBOX_LIMIT: usize = 4096;

/// A shard polls this long (µs) before it sleeps: at a moderate request rate it then answers
/// without being woken (p50 26 µs instead of 59 µs, p99 0.5 ms instead of 2.0 ms at 35 000
/// `agent` requests/s on one core here), and an idle one spins 50 µs after each burst of work
/// (0.05% of a core at 10 requests/s). The cost: up to the whole core under a steady moderate
/// load that would otherwise leave it partly idle (tuning.md, "Busy polling").
pub const DEFAULT_SPIN_BEFORE_PARK_US: u64 = 50;

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            websocket: WebSocketNetConfig::default(),
            spin_before_park_us: DEFAULT_SPIN_BEFORE_PARK_US,
            mesh_outbox_limit: DEFAULT_MESH_OUTBOX_LIMIT,
        }
    }
}

/// `network.websocket`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WebSocketNetConfig {
    /// Largest single WebSocket frame, bytes. Default 16 MiB (a message may span frames up
    /// to `gateway.maxPayload`).
    pub max_frame_size: usize,
    /// permessage-deflate (RFC 7692): offered by a client, accepted on the upgrade.
    /// Default false, as OpenClaw's gateway has it: compressing secrets (tokens in
    /// frames) next to attacker-influenced text leaks them through the compressed size
    /// (CRIME/BREACH), and it costs CPU per message. When on, the server imposes no context
    /// takeover both ways, so no connection keeps a compressor (one per shard, reset per
    /// message; idle memory unchanged) and inflated messages stay bounded by
    /// `gateway.maxPayload` (close 1009). tuning.md, "Compression".
    pub compression: bool,
    /// With `compression`, outgoing messages of at most this many bytes are sent
    /// uncompressed (per message, legal in RFC 7692): deflating a short frame costs more CPU
    /// than the bytes it saves. Default 256 bytes; 0 compresses every non-empty message.
    pub compression_threshold: usize,
}

impl Default for WebSocketNetConfig {
    fn default() -> Self {
        WebSocketNetConfig {
            max_frame_size: 16 << 20,
            compression: false,
            compression_threshold: 256,
        }
    }
}

/// A configuration that cannot be used, with the key path at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// JSON5 syntax.
    #[error("config {path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// Parser message with position.
        message: String,
    },
    /// A value of the wrong type or out of range.
    #[error("config key `{key}`: {reason}")]
    Invalid {
        /// Dotted key path.
        key: String,
        /// Why it is refused.
        reason: String,
    },
}

impl Config {
    /// Bounds and cross-field rules of the security keys.
    fn validate_security(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: String| {
            Err(ConfigError::Invalid {
                key: key.into(),
                reason,
            })
        };
        for r in &self.gateway.pairing.lan_ranges {
            if let Err(e) = crate::auth::net::Cidr::parse(r) {
                return bad("gateway.pairing.lanRanges", e);
            }
        }
        for e in &self.access.ip_whitelist {
            if let Err(e) = crate::auth::net::check_entry(e) {
                return bad("access.ipWhitelist", e);
            }
        }
        let t = &self.gateway.tls;
        if t.enabled && (t.cert.is_none() || t.key.is_none()) {
            return bad(
                "gateway.tls",
                "enabled needs both cert and key (PEM files)".into(),
            );
        }
        let p = &self.security.transport.tls;
        if let Err(e) = crate::transport::tls_policy::check_policy(&p.min_version, &p.ciphers) {
            return bad("security.transport.tls", e);
        }
        let a = &self.access.authentication;
        if a.methods.is_empty() {
            return bad(
                "access.authentication.methods",
                "must name at least one method (token, certificate)".into(),
            );
        }
        for m in &a.methods {
            match m.as_str() {
                "token" => {}
                "certificate" if t.enabled && t.client_ca.is_some() => {}
                "certificate" => {
                    return bad(
                        "access.authentication.methods",
                        "certificate needs gateway.tls.enabled and gateway.tls.clientCa".into(),
                    )
                }
                "oauth" => {
                    return bad(
                        "access.authentication.methods",
                        "oauth is not available (token, certificate)".into(),
                    )
                }
                other => {
                    return bad(
                        "access.authentication.methods",
                        format!("unknown method {other:?} (token, certificate)"),
                    )
                }
            }
        }
        for r in &a.mfa.required_for {
            if !matches!(r.as_str(), "admin" | "write") {
                return bad(
                    "access.authentication.mfa.requiredFor",
                    format!("unknown grant {r:?} (admin, write)"),
                );
            }
        }
        if let Some(s) = &a.mfa.operator_secret {
            if crate::auth::totp::base32_decode(s).is_none_or(|k| k.len() < 10) {
                return bad(
                    "access.authentication.mfa.operatorSecret",
                    "must be base32 of at least 80 bits".into(),
                );
            }
        }
        if self.access.rate_limiting.burst.0 == 0 {
            return bad(
                "access.rateLimiting.burst",
                "must be positive (e.g. \"10s\")".into(),
            );
        }
        Ok(())
    }
}

/// Overrides from the command line (each `None` leaves the config value).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--port`
    pub port: Option<u16>,
    /// `--bind loopback|lan|ADDR`
    pub bind: Option<String>,
    /// `--token`
    pub token: Option<String>,
    /// `--password`
    pub password: Option<String>,
    /// `--auth none|token|password`
    pub auth: Option<AuthMode>,
    /// `--state-dir`
    pub state_dir: Option<PathBuf>,
    /// `--shards`
    pub shards: Option<usize>,
}

/// A loaded config and the warnings met on the way (unknown keys).
#[derive(Debug)]
pub struct Loaded {
    /// The effective configuration.
    pub config: Config,
    /// One line per unknown key, naming its path.
    pub warnings: Vec<String>,
}

impl Config {
    /// Parses JSON5 text; unknown keys become warnings.
    pub fn from_json5(text: &str, path: &Path) -> Result<Loaded, ConfigError> {
        if depth::nesting(text) > depth::MAX_DEPTH {
            return Err(ConfigError::Syntax {
                path: path.to_path_buf(),
                message: format!("nested deeper than {} levels", depth::MAX_DEPTH),
            });
        }
        let value: serde_json::Value = json5::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut warnings = Vec::new();
        let mut on_unknown = |p: serde_ignored::Path<'_>| {
            warnings.push(format!("unknown config key `{p}` (ignored)"));
        };
        let de = serde_ignored::Deserializer::new(value, &mut on_unknown);
        let config: Config =
            serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Invalid {
                key: e.path().to_string(),
                reason: e.inner().to_string(),
            })?;
        Ok(Loaded { config, warnings })
    }

    /// Loads defaults ← file ← environment ← overrides, then validates.
    pub fn load(file: Option<&Path>, ov: &Overrides) -> Result<Loaded, ConfigError> {
        let mut loaded = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                Config::from_json5(&text, p)?
            }
            None => Loaded {
                config: Config::default(),
                warnings: Vec::new(),
            },
        };
        let c = &mut loaded.config;
        c.apply_env(|k| std::env::var(k).ok())?;
        c.apply_overrides(ov)?;
        c.validate()?;
        Ok(loaded)
    }

    /// Environment overrides: `OPENCLAW_GATEWAY_TOKEN`/`SHARDGATE_TOKEN`,
    /// `OPENCLAW_GATEWAY_PASSWORD`, `SHARDGATE_STATE_DIR`, `SHARDGATE_PORT`, `SHARDGATE_SHARDS`.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(t) = get("SHARDGATE_TOKEN").or_else(|| get("OPENCLAW_GATEWAY_TOKEN")) {
            if !t.is_empty() {
                self.gateway.auth.token = Some(t);
            }
        }
        if let Some(p) = get("OPENCLAW_GATEWAY_PASSWORD") {
            if !p.is_empty() {
                self.gateway.auth.password = Some(p);
            }
        }
        if let Some(d) = get("SHARDGATE_STATE_DIR") {
            if !d.is_empty() {
                self.state_dir = Some(PathBuf::from(d));
            }
        }
        if let Some(p) = get("SHARDGATE_PORT") {
            self.gateway.port = p.parse().map_err(|_| ConfigError::Invalid {
                key: "SHARDGATE_PORT".into(),
                reason: format!("not a port number: {p:?}"),
            })?;
        }
        if let Some(s) = get("SHARDGATE_SHARDS") {
            let v = serde_json::Value::String(s);
            self.shards = Shards::deserialize(v).map_err(|e| ConfigError::Invalid {
                key: "SHARDGATE_SHARDS".into(),
                reason: e.to_string(),
            })?;
        }
        Ok(())
    }

    /// Command-line overrides.
    pub fn apply_overrides(&mut self, ov: &Overrides) -> Result<(), ConfigError> {
        if let Some(p) = ov.port {
            self.gateway.port = p;
        }
        if let Some(b) = &ov.bind {
            self.gateway.host = match b.as_str() {
                "loopback" => "127.0.0.1".into(),
                "lan" | "all" => "0.0.0.0".into(),
                addr => addr.to_string(),
            };
        }
        if let Some(t) = &ov.token {
            self.gateway.auth.token = Some(t.clone());
        }
        if let Some(p) = &ov.password {
            self.gateway.auth.password = Some(p.clone());
        }
        if let Some(m) = ov.auth {
            self.gateway.auth.mode = Some(m);
        }
        if let Some(d) = &ov.state_dir {
            self.state_dir = Some(d.clone());
        }
        if let Some(n) = ov.shards {
            self.shards = Shards::count(n as u64).map_err(|reason| ConfigError::Invalid {
                key: "--shards".into(),
                reason,
            })?;
        }
        Ok(())
    }

    /// Bounds and cross-field rules.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: String| {
            Err(ConfigError::Invalid {
                key: key.into(),
                reason,
            })
        };
        let g = &self.gateway;
        if g.host.parse::<std::net::IpAddr>().is_err() {
            return bad("gateway.host", format!("not an IP address: {:?}", g.host));
        }
        if g.tick_interval_ms < 100 {
            return bad("gateway.tickIntervalMs", "must be at least 100".into());
        }
        if g.handshake_timeout_ms == 0 {
            return bad("gateway.handshakeTimeoutMs", "must be positive".into());
        }
        if g.write_timeout_ms == 0 {
            return bad("gateway.writeTimeoutMs", "must be positive".into());
        }
        if g.preauth_max_payload < 1024 || g.preauth_max_payload > g.max_payload {
            return bad(
                "gateway.preauthMaxPayload",
                "must be between 1024 and gateway.maxPayload".into(),
            );
        }
        if g.max_payload < 1024 {
            return bad("gateway.maxPayload", "must be at least 1024".into());
        }
        if g.max_buffered_bytes < g.max_payload.min(1 << 20) {
            return bad(
                "gateway.maxBufferedBytes",
                "must be at least min(gateway.maxPayload, 1 MiB)".into(),
            );
        }
        match g.auth.effective_mode() {
            AuthMode::Token if g.auth.token.as_deref().unwrap_or("").is_empty() => {
                return bad(
                    "gateway.auth.token",
                    "auth mode is token but no token is set (config, --token or OPENCLAW_GATEWAY_TOKEN)".into(),
                )
            }
            AuthMode::Password if g.auth.password.as_deref().unwrap_or("").is_empty() => {
                return bad("gateway.auth.password", "auth mode is password but no password is set".into())
            }
            _ => {}
        }
        match self.queue.backend.as_str() {
            "memory" | "journal" => {}
            "redis" => {
                if let Err((key, reason)) = self.queue.redis.check() {
                    return bad(&format!("queue.redis.{key}"), reason);
                }
            }
            "kafka" => {
                return bad(
                    "queue.backend",
                    "backend \"kafka\" is not available yet (available: \"memory\", \"journal\", \"redis\")".into(),
                )
            }
            other => {
                return bad(
                    "queue.backend",
                    format!("unknown backend {other:?} (memory, journal, redis, kafka)"),
                )
            }
        }
        if let Err((key, reason)) = g.clustering.check(&self.queue.backend) {
            return bad(&format!("gateway.clustering.{key}"), reason);
        }
        match self.storage.encryption.as_deref() {
            None | Some("none") | Some("aes-256-gcm") => {}
            Some(other) => {
                return bad(
                    "storage.encryption",
                    format!("unknown cipher {other:?} (aes-256-gcm)"),
                )
            }
        }
        if self.network.mesh_outbox_limit == 0 {
            return bad(
                "network.meshOutboxLimit",
                "must be at least 1 (requests waiting for a slow shard)".into(),
            );
        }
        if self.network.spin_before_park_us > 1_000_000 {
            return bad(
                "network.spinBeforeParkUs",
                "must be at most 1000000 (1 s); a shard spinning longer only burns its CPU".into(),
            );
        }
        if self.network.websocket.max_frame_size < 1024 {
            return bad(
                "network.websocket.maxFrameSize",
                "must be at least 1024".into(),
            );
        }
        if let Err((key, reason)) = channels::validate(&self.channels) {
            return bad(&key, reason);
        }
        for (i, a) in self.monitoring.alerts.iter().enumerate() {
            if !matches!(
                a.name.as_str(),
                "high_latency" | "connection_loss" | "queue_backlog" | "memory_pressure"
            ) {
                return bad(
                    &format!("monitoring.alerts[{i}].name"),
                    format!("unknown alert {:?} (high_latency, connection_loss, queue_backlog, memory_pressure; gateway_down is raised by `shardgate watch`)", a.name),
                );
            }
            for ch in &a.channels {
                if !self.monitoring.sinks.contains_key(ch) {
                    return bad(
                        &format!("monitoring.alerts[{i}].channels"),
                        format!("no sink named {ch:?} in monitoring.sinks"),
                    );
                }
            }
        }
        for (name, s) in &self.monitoring.sinks {
            if !s.url.starts_with("http://") {
                return bad(
                    &format!("monitoring.sinks.{name}.url"),
                    "an http:// url is required".into(),
                );
            }
        }
        if self.agents.default_agent.is_empty() {
            return bad("agents.defaultAgent", "must not be empty".into());
        }
        self.validate_security()?;
        Ok(())
    }

    /// Messages kept per session: `memory.caching.message.maxSize` when set, else
    /// `agents.historyLimit`.
    pub fn history_limit(&self) -> usize {
        self.memory
            .caching
            .message
            .max_size
            .unwrap_or(self.agents.history_limit)
    }

    /// The state directory: config, else `~/.shardgate`.
    pub fn state_dir(&self) -> PathBuf {
        if let Some(d) = &self.state_dir {
            return d.clone();
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        home.join(".shardgate")
    }

    /// The config as JSON with secrets replaced by `"__REDACTED__"` (for `config.get`).
    pub fn redacted_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        redact(&mut v);
        v
    }
}

fn redact(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                let lk = k.to_ascii_lowercase();
                let secret = lk.contains("token")
                    || lk.contains("password")
                    || lk.contains("secret")
                    || lk == "key";
                // Flags and lifetimes named after tokens (`requireToken`, `tokenLifetime`)
                // are not secrets.
                let secret = secret && !val.is_boolean() && !lk.ends_with("lifetime");
                if secret && !val.is_null() && !val.is_object() {
                    *val = serde_json::Value::String("__REDACTED__".into());
                } else {
                    redact(val);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(redact),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Loaded, ConfigError> {
        Config::from_json5(s, Path::new("test.json5"))
    }

    #[test]
    fn template_equals_default() {
        let text = include_str!("template.json5");
        let loaded = parse(text).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        assert_eq!(loaded.config, Config::default());
    }

    #[test]
    fn unknown_key_warns_with_path() {
        let l = parse("{gateway: {port: 1, bogus: true}, queue: {maxSize: 5}}").unwrap();
        assert_eq!(l.config.gateway.port, 1);
        assert_eq!(l.config.queue.max_size, 5);
        assert_eq!(l.warnings.len(), 1);
        assert!(l.warnings[0].contains("gateway.bogus"), "{:?}", l.warnings);
    }

    #[test]
    fn wrong_type_names_key() {
        let e = parse("{gateway: {port: 'x'}}").unwrap_err();
        assert!(e.to_string().contains("gateway.port"), "{e}");
        let e = parse("{queue: {retryPolicy: {initialDelay: '5 parsecs'}}}").unwrap_err();
        assert!(
            e.to_string().contains("queue.retryPolicy.initialDelay"),
            "{e}"
        );
    }

    /// A string enum refuses a value it does not know, naming the key and the accepted ones.
    #[test]
    fn enum_values_are_checked_with_key_and_choices() {
        for (text, key, choices) in [
            (
                "{queue: {retryPolicy: {backoff: 'linear'}}}",
                "queue.retryPolicy.backoff",
                "`exponential` or `fixed`",
            ),
            (
                "{channels: {sms: {kind: 'carrier-pigeon'}}}",
                "channels.sms.kind",
                "`log`, `webhook`, `telegram`, `discord`",
            ),
            (
                "{monitoring: {sinks: {ops: {kind: 'email', url: 'http://x'}}}}",
                "monitoring.sinks.ops.kind",
                "`webhook`, `slack`, `pagerduty`",
            ),
            (
                "{agents: {bindings: {a: {kind: 'gpt'}}}}",
                "agents.bindings.a.kind",
                "`echo` or `worker`",
            ),
            (
                "{gateway: {pairing: {mode: 'open'}}}",
                "gateway.pairing.mode",
                "`strict`, `lenient`, `disabled`",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(choices), "{text}: {e}");
        }
        let l = parse(
            "{queue: {retryPolicy: {backoff: 'fixed'}}, channels: {h: {kind: 'webhook', url: 'http://h'}}, \
             agents: {bindings: {w: {kind: 'worker', dangerouslyFailFirstAttempts: 2}}}}",
        )
        .unwrap();
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        assert_eq!(l.config.queue.retry_policy.backoff, Backoff::Fixed);
        assert_eq!(l.config.channels["h"].kind, ChannelKind::Webhook);
        let w = &l.config.agents.bindings["w"];
        assert_eq!(
            (w.kind, w.dangerously_fail_first_attempts),
            (Some(AgentKind::Worker), 2)
        );
        // A sink must say what it speaks.
        let e = parse("{monitoring: {sinks: {ops: {url: 'http://x'}}}}").unwrap_err();
        assert!(e.to_string().contains("monitoring.sinks.ops"), "{e}");
        assert!(e.to_string().contains("kind"), "{e}");
        // The test hook's old name is no longer read.
        let l = parse("{agents: {bindings: {a: {testFailFirstAttempts: 2}}}}").unwrap();
        assert!(
            l.warnings[0].contains("testFailFirstAttempts"),
            "{:?}",
            l.warnings
        );
    }

    /// `queue.backend: "redis"` needs `queue.redis.url`; each bad key is named; kafka stays
    /// refused with what is available.
    #[test]
    fn the_redis_backend_names_its_bad_keys() {
        for (text, key) in [
            ("{queue: {backend: 'redis'}}", "queue.redis.url"),
            (
                "{queue: {backend: 'redis', redis: {url: 'redis://h'}}}",
                "queue.redis.url",
            ),
            (
                "{queue: {backend: 'redis', redis: {url: 'redis://h:1', slots: 0}}}",
                "queue.redis.slots",
            ),
            (
                "{queue: {backend: 'redis', redis: {url: 'redis://h:1', keyPrefix: ''}}}",
                "queue.redis.keyPrefix",
            ),
            (
                "{queue: {backend: 'redis', redis: {url: 'redis://h:1', commandTimeout: '0ms'}}}",
                "queue.redis.commandTimeout",
            ),
            ("{queue: {backend: 'kafka'}}", "queue.backend"),
        ] {
            let e = parse(text)
                .and_then(|l| l.config.validate())
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
        let l = parse("{queue: {backend: 'redis', redis: {url: 'redis://u:p@h:6379', slots: 16}}}")
            .unwrap();
        l.config.validate().unwrap();
        assert_eq!(l.config.queue.redis.slots, 16);
        assert_eq!(l.config.queue.redis.key_prefix, "shardgate");
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    }

    /// Keys the gateway has no behaviour for are not accepted silently: a value it cannot
    /// honour refuses the start with the key's path, and a key that was removed warns.
    #[test]
    fn every_key_is_honoured_refused_or_warned() {
        for (text, key) in [
            (
                "{deduplication: {strategy: 'content_hash'}}",
                "deduplication.strategy",
            ),
            (
                "{deduplication: {storage: 'redis'}}",
                "deduplication.storage",
            ),
            ("{ordering: {guarantee: 'global'}}", "ordering.guarantee"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
        let l = parse(
            "{deduplication: {strategy: 'message_id', storage: 'memory'}, ordering: {guarantee: 'per_session'}}",
        )
        .unwrap();
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        let l = parse(
            "{memory: {caching: {routing: {maxSize: 5}}}, connections: {pool: {idleTimeout: '5m'}}}",
        )
        .unwrap();
        assert_eq!(l.warnings.len(), 2, "{:?}", l.warnings);
        assert!(
            l.warnings[0].contains("memory.caching.routing")
                || l.warnings[1].contains("memory.caching.routing")
        );
        assert!(l
            .warnings
            .iter()
            .any(|w| w.contains("connections.pool.idleTimeout")));
    }

    #[test]
    fn seed_durations_parse() {
        let l = parse("{queue: {retryPolicy: {initialDelay: '250ms', maxDelay: '2m'}, deadLetter: {maxAge: '7d'}}, deduplication: {window: '5m'}}").unwrap();
        assert_eq!(l.config.queue.retry_policy.initial_delay, Millis(250));
        assert_eq!(l.config.queue.retry_policy.max_delay, Millis(120_000));
        assert_eq!(l.config.deduplication.window, Millis(300_000));
    }

    #[test]
    fn shards_auto_or_count() {
        assert_eq!(
            parse("{shards: 'auto'}").unwrap().config.shards,
            Shards::Auto
        );
        assert_eq!(
            parse("{shards: 3}").unwrap().config.shards,
            Shards::Count(3)
        );
        assert!(parse("{shards: 0}").is_err());
    }

    #[test]
    fn env_and_overrides_win() {
        let mut c = Config::default();
        c.apply_env(|k| (k == "OPENCLAW_GATEWAY_TOKEN").then(|| "envtok".to_string()))
            .unwrap();
        assert_eq!(c.gateway.auth.effective_mode(), AuthMode::Token);
        c.apply_overrides(&Overrides {
            token: Some("flag".into()),
            bind: Some("lan".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.gateway.auth.token.as_deref(), Some("flag"));
        assert_eq!(c.gateway.host, "0.0.0.0");
        c.validate().unwrap();
    }

    #[test]
    fn validation_refuses_with_key() {
        let mut c = Config::default();
        c.gateway.auth.mode = Some(AuthMode::Token);
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("gateway.auth.token"));
        let mut c = Config::default();
        c.queue.backend = "kafka".into();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("queue.backend"));
    }

    #[test]
    fn redaction_hides_secrets() {
        let mut c = Config::default();
        c.gateway.auth.token = Some("hunter2".into());
        let v = c.redacted_json();
        assert!(!v.to_string().contains("hunter2"));
        assert_eq!(v["gateway"]["auth"]["token"], "__REDACTED__");
    }
}
