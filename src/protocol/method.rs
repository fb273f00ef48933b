// Hot path: every request's method name is looked up here, once.
//! The method table: every method this gateway implements, as one [`Method`].
//!
//! A method is a variant of its area's enum ([`ChatMethod`], [`SessionMethod`], [`NodeMethod`],
//! [`DeviceMethod`], [`NodePairMethod`], [`InfoMethod`], [`AdminMethod`], [`CompatMethod`]);
//! the area is also where its handler lives. Each variant has, in exhaustive `match`es (no `_`
//! arm, so a new variant does not compile until it has all of them): its wire name, the scope
//! it requires ([`Method::need`]), whether a node may call it ([`Method::node_may_call`]),
//! where it runs ([`Method::placement`]) and whether it submits a message
//! ([`Method::submit_kind`]). The handlers' dispatch matches on the area enums the same way.
//!
//! [`Method::parse`] is the only map from a name to a method: a binary search in [`Method::ALL`],
//! sorted by name at compile time (a duplicate name does not compile). A request's method is
//! parsed once, in `frame::parse`, and travels as a `Method` (two bytes, `Copy`) from then on.
//!
//! Sans-IO: depends on nothing but [`super::scope`].

use std::borrow::Cow;
use std::fmt;

use super::scope::{Need, ADMIN, APPROVALS, PAIRING, QUESTIONS, READ, TALK, WRITE};

/// One area's enum: its variants and their wire names, and `ALL` in declaration order.
macro_rules! area {
    ($(#[$doc:meta])* $area:ident { $($v:ident = $wire:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $area {
            $(#[doc = concat!("`", $wire, "`")] $v,)+
        }

        impl $area {
            /// Every method of this area, in declaration order.
            pub const ALL: &'static [$area] = &[$($area::$v,)+];

            /// The name on the wire.
            pub const fn name(self) -> &'static str {
                match self {
                    $($area::$v => $wire,)+
                }
            }
        }
    };
}

area! {
    /// Messages to a session's agent and its transcript (`agent`, `chat.*`, `send`). All but
    /// `agent.wait` run on the session's owner; the four submissions are deduplicated by
    /// `idempotencyKey` and queued on the session's lane.
    ChatMethod {
        Agent = "agent",
        AgentWait = "agent.wait",
        ChatAbort = "chat.abort",
        ChatHistory = "chat.history",
        ChatSend = "chat.send",
        Send = "send",
        SessionsSend = "sessions.send",
    }
}

area! {
    /// One session's lifecycle, on the session's owner (`routing/session_ops.rs`).
    SessionMethod {
        Abort = "sessions.abort",
        Compact = "sessions.compact",
        Create = "sessions.create",
        Delete = "sessions.delete",
        Describe = "sessions.describe",
        Get = "sessions.get",
        Patch = "sessions.patch",
        Reset = "sessions.reset",
    }
}

area! {
    /// Nodes, their invokes and capabilities, and agent workers (`node/`).
    NodeMethod {
        CapabilitiesStatus = "capabilities.status",
        CapabilityInvoke = "capability.invoke",
        Describe = "node.describe",
        Event = "node.event",
        Invoke = "node.invoke",
        InvokeResult = "node.invoke.result",
        List = "node.list",
        PluginToolsUpdate = "node.pluginTools.update",
        RunnerInventoryUpdate = "node.runnerInventory.update",
        SkillsUpdate = "node.skills.update",
        WorkerPong = "worker.pong",
        WorkerRunEvent = "worker.run.event",
        WorkerRunResult = "worker.run.result",
        WorkersStatus = "workers.status",
    }
}

area! {
    /// Device pairing, tokens and second factors (`auth/pairing.rs`, `auth/bootstrap.rs`).
    DeviceMethod {
        MfaEnroll = "device.mfa.enroll",
        PairApprove = "device.pair.approve",
        PairList = "device.pair.list",
        PairReject = "device.pair.reject",
        PairRemove = "device.pair.remove",
        PairSetupCode = "device.pair.setupCode",
        TokenRevoke = "device.token.revoke",
        TokenRotate = "device.token.rotate",
    }
}

area! {
    /// Approval of a node's command surface (`node/pairing.rs`).
    NodePairMethod {
        Approve = "node.pair.approve",
        List = "node.pair.list",
        Reject = "node.pair.reject",
        Remove = "node.pair.remove",
        Request = "node.pair.request",
        Verify = "node.pair.verify",
    }
}

area! {
    /// Gateway state answered on the caller's shard (`routing/info.rs`): health, status,
    /// presence, identity, config, session listing and subscriptions, the queue, traces.
    InfoMethod {
        ChannelsStatus = "channels.status",
        ConfigGet = "config.get",
        GatewayAudit = "gateway.audit",
        GatewayIdentityGet = "gateway.identity.get",
        GatewayTrace = "gateway.trace",
        Health = "health",
        LastHeartbeat = "last-heartbeat",
        QueueInspect = "queue.inspect",
        QueueRedrive = "queue.redrive",
        QueueStats = "queue.stats",
        QueueStatus = "queue.status",
        SessionsList = "sessions.list",
        SessionsSubscribe = "sessions.subscribe",
        SessionsUnsubscribe = "sessions.unsubscribe",
        Status = "status",
        SystemEvent = "system-event",
        SystemPresence = "system-presence",
    }
}

area! {
    /// Operator statistics of SPEC §6/§9 (`ops/admin.rs`).
    AdminMethod {
        Connections = "gateway.connections",
        Diagnose = "gateway.diagnose",
        Latency = "gateway.latency",
        Profile = "gateway.profile",
        Stats = "gateway.stats",
    }
}

area! {
    /// Operations and catalogs real OpenClaw clients call on every gateway (`ops/compat.rs`).
    CompatMethod {
        AgentIdentityGet = "agent.identity.get",
        AgentsList = "agents.list",
        CommandsList = "commands.list",
        CronList = "cron.list",
        CronStatus = "cron.status",
        DiagnosticsStability = "diagnostics.stability",
        DoctorMemoryStatus = "doctor.memory.status",
        ExecApprovalsGet = "exec.approvals.get",
        HooksStatus = "hooks.status",
        LogsTail = "logs.tail",
        ModelsList = "models.list",
        PluginApprovalList = "plugin.approval.list",
        QuestionList = "question.list",
        SetHeartbeats = "set-heartbeats",
        SkillsStatus = "skills.status",
        SystemInfo = "system.info",
        TalkConfig = "talk.config",
        TaskSuggestionsList = "taskSuggestions.list",
        TasksList = "tasks.list",
        ToolsCatalog = "tools.catalog",
        UpdateStatus = "update.status",
        UsageCost = "usage.cost",
        UsageStatus = "usage.status",
        VoicewakeGet = "voicewake.get",
        Wake = "wake",
    }
}

/// The areas: the [`Method`] enum, its name, and the unsorted list of every method.
macro_rules! methods {
    ($($area:ident($ty:ident),)+) => {
        /// A method this gateway implements, by area.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Method {
            $(
                #[doc = concat!("A [`", stringify!($ty), "`].")]
                $area($ty),
            )+
        }

        impl Method {
    /// The answer to a method reaching a handler that does not run it (one placed
    /// elsewhere): what an unknown method gets.
    pub fn not_here(self) -> super::error::GatewayError {
        super::error::GatewayError::UnknownMethod(self.name().to_string())
    }

            /// The name on the wire.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Method::$area(m) => m.name(),)+
                }
            }
        }

        /// How many methods there are.
        const COUNT: usize = 0 $(+ $ty::ALL.len())+;

        /// Every method, area by area.
        const fn unsorted() -> [Method; COUNT] {
            let mut out = [Method::Info(InfoMethod::Health); COUNT];
            let mut n = 0;
            $(
                let mut i = 0;
                while i < $ty::ALL.len() {
                    out[n] = Method::$area($ty::ALL[i]);
                    n += 1;
                    i += 1;
                }
            )+
            assert!(n == COUNT);
            out
        }
    };
}

methods! {
    Chat(ChatMethod),
    Session(SessionMethod),
    Node(NodeMethod),
    Device(DeviceMethod),
    NodePair(NodePairMethod),
    Info(InfoMethod),
    Admin(AdminMethod),
    Compat(CompatMethod),
}

/// Where a method runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// On the shard of the connection that asked.
    Connection,
    /// On `owner(session key)`: a plain call when that is this shard, a mesh `Call` when not.
    SessionOwner(KeyFrom),
    /// On `owner(runId)`, where the run's directory entry lives.
    RunOwner,
}

/// Which parameters name the session a [`Placement::SessionOwner`] method acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFrom {
    /// `sessionKey`, required.
    SessionKey,
    /// `key`, else `sessionKey`; one is required.
    Key,
    /// `key`, else `sessionKey`, else a new session of `agentId` (default: the default agent).
    KeyOrNew,
    /// `sessionKey`, else the main session of `agentId` (default: the default agent).
    AgentMain,
    /// `sessionKey`, else the direct session of `to` on `channel` (default `log`).
    SendTarget,
}

/// What a submission method queues: the job's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitKind {
    /// An agent run (`agent`).
    Agent,
    /// A chat message (`chat.send`, `sessions.send`).
    Chat,
    /// An outbound message on a channel (`send`).
    Send,
}

/// Every method, sorted by name: [`Method::ALL`].
const SORTED: [Method; COUNT] = sorted(unsorted(), false);

/// Every method ordered by the length of its name, then by name: what [`Method::parse`]
/// searches, so that most steps compare two lengths and only names of the same length are
/// compared byte by byte.
const BY_LENGTH: [Method; COUNT] = sorted(unsorted(), true);

/// The names of [`BY_LENGTH`], in its order.
const NAMES: [&str; COUNT] = {
    let mut out = [""; COUNT];
    let mut i = 0;
    while i < COUNT {
        out[i] = BY_LENGTH[i].name();
        i += 1;
    }
    out
};

/// Whether `a` sorts before `b` (`str`'s order: bytes, then length; with `by_length`, the
/// shorter first, then bytes), at compile time.
const fn before(a: &str, b: &str, by_length: bool) -> bool {
    if by_length && a.len() != b.len() {
        return a.len() < b.len();
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut i = 0;
    while i < a.len() && i < b.len() {
        if a[i] != b[i] {
            return a[i] < b[i];
        }
        i += 1;
    }
    a.len() < b.len()
}

/// `m` sorted by name (see [`before`]); a name given twice stops the build.
const fn sorted(mut m: [Method; COUNT], by_length: bool) -> [Method; COUNT] {
    let mut i = 1;
    while i < COUNT {
        let mut j = i;
        while j > 0 && before(m[j].name(), m[j - 1].name(), by_length) {
            let t = m[j];
            m[j] = m[j - 1];
            m[j - 1] = t;
            j -= 1;
        }
        i += 1;
    }
    let mut k = 1;
    while k < COUNT {
        assert!(
            before(m[k - 1].name(), m[k].name(), by_length),
            "a method name twice"
        );
        k += 1;
    }
    m
}

impl Method {
    /// Every method, sorted by name, each once. Listed in `hello-ok.features.methods`.
    pub const ALL: &'static [Method] = &SORTED;

    /// The method named `name`, if this gateway implements it. A binary search over the
    /// names by length, then bytes: about seven steps, most of them a compare of two lengths;
    /// no hashing, no allocation.
    pub fn parse(name: &str) -> Option<Method> {
        NAMES
            .binary_search_by(|n| {
                n.len()
                    .cmp(&name.len())
                    .then_with(|| n.as_bytes().cmp(name.as_bytes()))
            })
            .ok()
            .map(|i| BY_LENGTH[i])
    }

    /// The scope the caller needs (PROTOCOL.md §4); admin passes all, write passes read.
    pub const fn need(self) -> Need {
        let s = match self {
            Method::Chat(m) => match m {
                ChatMethod::ChatHistory => READ,
                ChatMethod::Agent
                | ChatMethod::AgentWait
                | ChatMethod::ChatAbort
                | ChatMethod::ChatSend
                | ChatMethod::Send
                | ChatMethod::SessionsSend => WRITE,
            },
            Method::Session(m) => match m {
                SessionMethod::Get | SessionMethod::Describe => READ,
                SessionMethod::Abort
                | SessionMethod::Create
                | SessionMethod::Delete
                | SessionMethod::Patch
                | SessionMethod::Reset => WRITE,
                SessionMethod::Compact => ADMIN,
            },
            Method::Node(m) => match m {
                NodeMethod::List
                | NodeMethod::Describe
                | NodeMethod::WorkersStatus
                | NodeMethod::CapabilitiesStatus => READ,
                NodeMethod::Invoke | NodeMethod::CapabilityInvoke => WRITE,
                // What nodes and workers report: a node passes by its role, an operator
                // needs admin.
                NodeMethod::InvokeResult
                | NodeMethod::Event
                | NodeMethod::RunnerInventoryUpdate
                | NodeMethod::SkillsUpdate
                | NodeMethod::PluginToolsUpdate
                | NodeMethod::WorkerRunEvent
                | NodeMethod::WorkerRunResult
                | NodeMethod::WorkerPong => ADMIN,
            },
            Method::Device(m) => match m {
                DeviceMethod::PairList
                | DeviceMethod::PairApprove
                | DeviceMethod::PairReject
                | DeviceMethod::PairRemove
                | DeviceMethod::TokenRotate
                | DeviceMethod::TokenRevoke
                | DeviceMethod::MfaEnroll => PAIRING,
                // A setup code admits a new device: more than approving one that asked.
                DeviceMethod::PairSetupCode => ADMIN,
            },
            Method::NodePair(m) => match m {
                NodePairMethod::Request
                | NodePairMethod::List
                | NodePairMethod::Approve
                | NodePairMethod::Reject
                | NodePairMethod::Verify
                | NodePairMethod::Remove => PAIRING,
            },
            Method::Info(m) => match m {
                InfoMethod::Health => return Need::Open,
                InfoMethod::Status
                | InfoMethod::SystemPresence
                | InfoMethod::LastHeartbeat
                | InfoMethod::GatewayIdentityGet
                | InfoMethod::ChannelsStatus
                | InfoMethod::ConfigGet
                | InfoMethod::SessionsList
                | InfoMethod::SessionsSubscribe
                | InfoMethod::SessionsUnsubscribe => READ,
                InfoMethod::SystemEvent
                | InfoMethod::QueueStatus
                | InfoMethod::QueueStats
                | InfoMethod::QueueInspect
                | InfoMethod::QueueRedrive
                | InfoMethod::GatewayTrace
                | InfoMethod::GatewayAudit => ADMIN,
            },
            Method::Admin(m) => match m {
                AdminMethod::Stats
                | AdminMethod::Connections
                | AdminMethod::Latency
                | AdminMethod::Diagnose
                | AdminMethod::Profile => ADMIN,
            },
            // Scopes as OpenClaw's method table has them.
            Method::Compat(m) => match m {
                CompatMethod::LogsTail
                | CompatMethod::SystemInfo
                | CompatMethod::DiagnosticsStability
                | CompatMethod::DoctorMemoryStatus
                | CompatMethod::CronList
                | CompatMethod::CronStatus
                | CompatMethod::AgentsList
                | CompatMethod::AgentIdentityGet
                | CompatMethod::CommandsList
                | CompatMethod::ToolsCatalog
                | CompatMethod::SkillsStatus
                | CompatMethod::HooksStatus
                | CompatMethod::UsageStatus
                | CompatMethod::UsageCost
                | CompatMethod::TasksList
                | CompatMethod::TaskSuggestionsList
                | CompatMethod::VoicewakeGet
                | CompatMethod::ModelsList => READ,
                CompatMethod::Wake => WRITE,
                CompatMethod::ExecApprovalsGet
                | CompatMethod::UpdateStatus
                | CompatMethod::SetHeartbeats => ADMIN,
                CompatMethod::PluginApprovalList => APPROVALS,
                CompatMethod::QuestionList => QUESTIONS,
                CompatMethod::TalkConfig => TALK,
            },
        };
        Need::Scope(s)
    }

    /// Whether a connection of role `node` may call it (nodes have no scopes: these are
    /// what a node host and an agent worker send).
    pub const fn node_may_call(self) -> bool {
        match self {
            Method::Info(m) => match m {
                InfoMethod::Health => true,
                InfoMethod::Status
                | InfoMethod::SystemPresence
                | InfoMethod::LastHeartbeat
                | InfoMethod::GatewayIdentityGet
                | InfoMethod::ChannelsStatus
                | InfoMethod::ConfigGet
                | InfoMethod::SessionsList
                | InfoMethod::SessionsSubscribe
                | InfoMethod::SessionsUnsubscribe
                | InfoMethod::SystemEvent
                | InfoMethod::QueueStatus
                | InfoMethod::QueueStats
                | InfoMethod::QueueInspect
                | InfoMethod::QueueRedrive
                | InfoMethod::GatewayTrace
                | InfoMethod::GatewayAudit => false,
            },
            Method::Node(m) => match m {
                NodeMethod::InvokeResult
                | NodeMethod::Event
                | NodeMethod::RunnerInventoryUpdate
                | NodeMethod::SkillsUpdate
                | NodeMethod::PluginToolsUpdate
                | NodeMethod::WorkerRunEvent
                | NodeMethod::WorkerRunResult
                | NodeMethod::WorkerPong => true,
                NodeMethod::List
                | NodeMethod::Describe
                | NodeMethod::Invoke
                | NodeMethod::WorkersStatus
                | NodeMethod::CapabilitiesStatus
                | NodeMethod::CapabilityInvoke => false,
            },
            Method::NodePair(m) => match m {
                NodePairMethod::Request => true,
                NodePairMethod::List
                | NodePairMethod::Approve
                | NodePairMethod::Reject
                | NodePairMethod::Verify
                | NodePairMethod::Remove => false,
            },
            Method::Chat(_)
            | Method::Session(_)
            | Method::Device(_)
            | Method::Admin(_)
            | Method::Compat(_) => false,
        }
    }

    /// Where it runs.
    pub const fn placement(self) -> Placement {
        match self {
            Method::Chat(m) => Placement::SessionOwner(match m {
                ChatMethod::Agent => KeyFrom::AgentMain,
                ChatMethod::Send => KeyFrom::SendTarget,
                ChatMethod::SessionsSend => KeyFrom::Key,
                ChatMethod::ChatSend | ChatMethod::ChatHistory | ChatMethod::ChatAbort => {
                    KeyFrom::SessionKey
                }
                ChatMethod::AgentWait => return Placement::RunOwner,
            }),
            Method::Session(m) => Placement::SessionOwner(match m {
                SessionMethod::Create => KeyFrom::KeyOrNew,
                SessionMethod::Abort
                | SessionMethod::Compact
                | SessionMethod::Delete
                | SessionMethod::Describe
                | SessionMethod::Get
                | SessionMethod::Patch
                | SessionMethod::Reset => KeyFrom::Key,
            }),
            Method::Node(_)
            | Method::Device(_)
            | Method::NodePair(_)
            | Method::Info(_)
            | Method::Admin(_)
            | Method::Compat(_) => Placement::Connection,
        }
    }

    /// What it queues, if it submits a message to a session: such a request's parameters
    /// are read straight into a `params::Submission`, it is deduplicated by its
    /// `idempotencyKey`, and refused while the gateway shuts down.
    pub const fn submit_kind(self) -> Option<SubmitKind> {
        match self {
            Method::Chat(m) => match m {
                ChatMethod::Agent => Some(SubmitKind::Agent),
                ChatMethod::ChatSend | ChatMethod::SessionsSend => Some(SubmitKind::Chat),
                ChatMethod::Send => Some(SubmitKind::Send),
                ChatMethod::AgentWait | ChatMethod::ChatAbort | ChatMethod::ChatHistory => None,
            },
            Method::Session(_)
            | Method::Node(_)
            | Method::Device(_)
            | Method::NodePair(_)
            | Method::Info(_)
            | Method::Admin(_)
            | Method::Compat(_) => None,
        }
    }

    /// Whether it submits a message ([`Method::submit_kind`]).
    pub const fn is_submission(self) -> bool {
        self.submit_kind().is_some()
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A request's method as the client named it: one this gateway implements, or another name,
/// kept for the `unknown method` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Called {
    /// A method of the table.
    Known(Method),
    /// Any other name (`connect` after the handshake, a typo, a newer client's method).
    Unknown(String),
}

impl Called {
    /// Looks `name` up; only an unknown name is copied.
    pub fn parse(name: Cow<'_, str>) -> Called {
        match Method::parse(&name) {
            Some(m) => Called::Known(m),
            None => Called::Unknown(name.into_owned()),
        }
    }

    /// The name as sent.
    pub fn as_str(&self) -> &str {
        match self {
            Called::Known(m) => m.name(),
            Called::Unknown(n) => n,
        }
    }

    /// The method, when known.
    pub fn known(&self) -> Option<Method> {
        match self {
            Called::Known(m) => Some(*m),
            Called::Unknown(_) => None,
        }
    }
}

impl From<&str> for Called {
    fn from(name: &str) -> Called {
        Called::parse(Cow::Borrowed(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_round_trips_through_its_name() {
        for m in Method::ALL {
            assert_eq!(Method::parse(m.name()), Some(*m), "{m}");
            assert_eq!(Called::from(m.name()), Called::Known(*m));
            assert_eq!(m.to_string(), m.name());
        }
        for unknown in [
            "",
            "connect",
            "Health",
            "health ",
            "sessions",
            "zzz",
            "agent.wai",
        ] {
            assert_eq!(Method::parse(unknown), None, "{unknown:?}");
            assert_eq!(Called::from(unknown).as_str(), unknown);
        }
    }

    #[test]
    fn the_list_is_sorted_unique_and_has_every_area() {
        assert!(
            Method::ALL.windows(2).all(|w| w[0].name() < w[1].name()),
            "sorted, each once"
        );
        let areas: [&[Method]; 8] = [
            &ChatMethod::ALL
                .iter()
                .map(|m| Method::Chat(*m))
                .collect::<Vec<_>>(),
            &SessionMethod::ALL
                .iter()
                .map(|m| Method::Session(*m))
                .collect::<Vec<_>>(),
            &NodeMethod::ALL
                .iter()
                .map(|m| Method::Node(*m))
                .collect::<Vec<_>>(),
            &DeviceMethod::ALL
                .iter()
                .map(|m| Method::Device(*m))
                .collect::<Vec<_>>(),
            &NodePairMethod::ALL
                .iter()
                .map(|m| Method::NodePair(*m))
                .collect::<Vec<_>>(),
            &InfoMethod::ALL
                .iter()
                .map(|m| Method::Info(*m))
                .collect::<Vec<_>>(),
            &AdminMethod::ALL
                .iter()
                .map(|m| Method::Admin(*m))
                .collect::<Vec<_>>(),
            &CompatMethod::ALL
                .iter()
                .map(|m| Method::Compat(*m))
                .collect::<Vec<_>>(),
        ];
        let total: usize = areas.iter().map(|a| a.len()).sum();
        assert_eq!(Method::ALL.len(), total);
        for m in areas.iter().flat_map(|a| a.iter()) {
            assert!(Method::ALL.contains(m), "{m} listed");
        }
    }

    /// The security-relevant requirements, as authorization enforced them before the table.
    #[test]
    fn scopes_of_sensitive_methods() {
        let need = |n: &str| Method::parse(n).map(Method::need);
        assert_eq!(need("node.invoke"), Some(Need::Scope(WRITE)));
        assert_eq!(need("node.invoke.result"), Some(Need::Scope(ADMIN)));
        for m in [
            "device.pair.list",
            "device.pair.approve",
            "device.pair.reject",
            "device.pair.remove",
            "device.token.rotate",
            "device.token.revoke",
            "device.mfa.enroll",
            "node.pair.approve",
        ] {
            assert_eq!(need(m), Some(Need::Scope(PAIRING)), "{m}");
        }
        assert_eq!(need("device.pair.setupCode"), Some(Need::Scope(ADMIN)));
        assert_eq!(need("config.get"), Some(Need::Scope(READ)));
        assert_eq!(need("sessions.compact"), Some(Need::Scope(ADMIN)));
        assert_eq!(need("queue.redrive"), Some(Need::Scope(ADMIN)));
        assert_eq!(need("system-event"), Some(Need::Scope(ADMIN)));
        assert_eq!(need("exec.approvals.get"), Some(Need::Scope(ADMIN)));
        assert_eq!(need("health"), Some(Need::Open));
        // There is no config write method: `config.set`/`config.apply`/`config.patch` are
        // unknown, so no scope can reach them.
        for m in ["config.set", "config.apply", "config.patch"] {
            assert_eq!(need(m), None, "{m}");
        }
        let node: Vec<&str> = Method::ALL
            .iter()
            .filter(|m| m.node_may_call())
            .map(|m| m.name())
            .collect();
        assert_eq!(
            node,
            [
                "health",
                "node.event",
                "node.invoke.result",
                "node.pair.request",
                "node.pluginTools.update",
                "node.runnerInventory.update",
                "node.skills.update",
                "worker.pong",
                "worker.run.event",
                "worker.run.result",
            ]
        );
    }

    #[test]
    fn placements_and_submissions() {
        let p = |n: &str| Method::parse(n).map(Method::placement);
        assert_eq!(
            p("agent"),
            Some(Placement::SessionOwner(KeyFrom::AgentMain))
        );
        assert_eq!(p("agent.wait"), Some(Placement::RunOwner));
        assert_eq!(
            p("sessions.create"),
            Some(Placement::SessionOwner(KeyFrom::KeyOrNew))
        );
        assert_eq!(p("sessions.list"), Some(Placement::Connection));
        assert_eq!(p("node.invoke"), Some(Placement::Connection));
        let subs: Vec<&str> = Method::ALL
            .iter()
            .filter(|m| m.is_submission())
            .map(|m| m.name())
            .collect();
        assert_eq!(subs, ["agent", "chat.send", "send", "sessions.send"]);
        for m in Method::ALL {
            // A submission is queued on its session's lane, so it runs on the owner.
            if m.is_submission() {
                assert!(matches!(m.placement(), Placement::SessionOwner(_)), "{m}");
            }
        }
    }
}
