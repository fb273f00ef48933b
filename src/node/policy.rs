//! Which commands a node may put up for approval at all: OpenClaw's node pairing allowlist
//! (`resolveNodePairingCommandAllowlist`). A command a node declares outside it is *withheld*:
//! never filed in a pairing request, never effective, never invoked. The list is the node
//! platform's defaults plus `gateway.nodes.allowCommands` (OpenClaw's
//! `gateway.nodes.commands.allow`), minus `gateway.nodes.denyCommands` and the private worker
//! controls.
//!
//! Invariants a reader must keep:
//! - The platform comes from `client.platform` and `client.deviceFamily` as OpenClaw
//!   normalises them: a canonical platform whose device family does not match is `unknown`
//!   (the narrowest defaults), so a client cannot claim a desktop's commands by its platform
//!   string alone.
//! - Commands OpenClaw marks dangerous (camera.snap, screen.record, sms.send, …) are in no
//!   platform's defaults: they need an explicit `allowCommands` entry.

use crate::config::NodesConfig;

const SYSTEM_RUN: &[&str] = &["system.run.prepare", "system.run", "system.which"];
const EXEC_APPROVALS: &[&str] = &["system.execApprovals.get", "system.execApprovals.set"];
const FILE: &[&str] = &["fs.listDir", "terminal.upload"];
const BROWSER_PROXY: &[&str] = &["browser.proxy", "browser.proxy.upload.v1"];
const DESKTOP_OTHER: &[&str] = &[
    "system.notify",
    "mcp.tools.call.v1",
    "agent.cli.claude.run.v1",
    "screen.snapshot",
    "desktop.stream",
    "computer.act",
];
const CAMERA: &[&str] = &["camera.list"];
const LOCATION: &[&str] = &["location.get"];
const DEVICE: &[&str] = &["device.info", "device.status"];
const PERSONAL: &[&str] = &[
    "contacts.search",
    "calendar.events",
    "reminders.list",
    "photos.latest",
    "motion.activity",
    "motion.pedometer",
];
const ANDROID: &[&str] = &[
    "notifications.list",
    "notifications.actions",
    "system.notify",
    "device.permissions",
    "device.health",
    "device.apps",
    "callLog.search",
    "mobile.ui.observe",
    "mobile.ui.act",
];
const MAC: &[&str] = &["camera.ptz.status", "device.apps"];
const IOS: &[&str] = &["system.notify"];
const IOS_WATCH_RELAY: &[&str] = &["watch.status", "watch.notify"];
const TALK_PTT: &[&str] = &[
    "talk.ptt.start",
    "talk.ptt.stop",
    "talk.ptt.cancel",
    "talk.ptt.once",
];
/// Defaults OpenClaw's bundled plugins add on desktops (its Ollama plugin).
const DESKTOP_PLUGIN: &[&str] = &["ollama.chat", "ollama.models"];
/// OpenClaw's private worker controls: never declarable.
const PRIVATE: &[&str] = &[
    "worker.bundle.install.v1",
    "worker.launch.v1",
    "worker.status.v1",
    "worker.cancel.v1",
    "worker.environment.stop.v1",
];

fn normalize(s: Option<&str>) -> String {
    s.unwrap_or_default().trim().to_lowercase()
}

/// The canonical platforms and the device families each accepts.
const FAMILIES: &[(&str, &[&str])] = &[
    ("ios", &["iphone", "ipad", "ios"]),
    ("watchos", &["apple watch", "watchos"]),
    ("android", &["android"]),
    ("macos", &["mac"]),
    ("windows", &["windows"]),
    ("linux", &["linux"]),
];

/// Whether `family` (normalised) fits canonical platform `p` (a phone may omit it).
fn family_fits(p: &str, family: &str) -> bool {
    (family.is_empty() && (p == "ios" || p == "android"))
        || FAMILIES
            .iter()
            .any(|(q, tokens)| *q == p && tokens.contains(&family))
}

/// OpenClaw's `normalizePlatformId`: `ios`, `watchos`, `android`, `macos`, `windows`,
/// `linux` or `unknown`.
pub fn platform_id(platform: Option<&str>, device_family: Option<&str>) -> &'static str {
    let raw = normalize(platform);
    let family = normalize(device_family);
    if let Some((p, _)) = FAMILIES.iter().find(|(p, _)| *p == raw) {
        return if family_fits(p, &family) {
            p
        } else {
            "unknown"
        };
    }
    let word = |prefix: &str| {
        raw.strip_prefix(prefix)
            .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
    };
    let versioned = if word("ios ") || word("ipados ") {
        "ios"
    } else if word("macos ") {
        "macos"
    } else if !raw.is_empty() {
        return "unknown";
    } else {
        // No platform: the first platform one of whose families the device family names.
        return FAMILIES
            .iter()
            .find(|(_, tokens)| tokens.iter().any(|t| family.contains(t)))
            .map_or("unknown", |(p, _)| p);
    };
    if !family.is_empty() && family_fits(versioned, &family) {
        versioned
    } else {
        "unknown"
    }
}

/// What every desktop platform allows.
const DESKTOP: &[&[&str]] = &[
    SYSTEM_RUN,
    EXEC_APPROVALS,
    FILE,
    BROWSER_PROXY,
    DESKTOP_OTHER,
    DESKTOP_PLUGIN,
];

/// A platform's default command sets: the desktop sets (or none), then its own.
fn defaults(platform: &str) -> [&'static [&'static [&'static str]]; 2] {
    match platform {
        "linux" => [DESKTOP, &[]],
        "windows" => [DESKTOP, &[CAMERA, LOCATION, DEVICE]],
        "macos" => [DESKTOP, &[CAMERA, LOCATION, DEVICE, PERSONAL, MAC]],
        "ios" => [&[], &[CAMERA, LOCATION, DEVICE, PERSONAL, IOS]],
        "watchos" => [&[], &[DEVICE, IOS]],
        "android" => [&[], &[CAMERA, LOCATION, DEVICE, PERSONAL, ANDROID]],
        _ => [&[], &[CAMERA, LOCATION, &["system.notify"]]],
    }
}

fn pattern_matches(pattern: &str, command: &str) -> bool {
    pattern == command
        || pattern
            .strip_suffix('*')
            .is_some_and(|p| command.starts_with(p))
}

/// Whether a node on `platform` (see [`platform_id`]) may put `command` up for approval.
/// `talk`: the node has a talk surface (a `talk` capability or `talk.*` commands);
/// `iphone`: its device family is iPhone (watch relay commands).
pub fn pairing_allowed(
    cfg: &NodesConfig,
    platform: &str,
    talk: bool,
    iphone: bool,
    command: &str,
) -> bool {
    let command = command.trim();
    if command.is_empty() || PRIVATE.contains(&command) {
        return false;
    }
    if cfg
        .deny_commands
        .iter()
        .any(|p| pattern_matches(p, command))
    {
        return false;
    }
    defaults(platform)
        .iter()
        .flat_map(|sets| sets.iter())
        .any(|set| set.contains(&command))
        || (platform == "ios" && iphone && IOS_WATCH_RELAY.contains(&command))
        || (talk && TALK_PTT.contains(&command))
        || cfg
            .allow_commands
            .iter()
            .any(|p| pattern_matches(p, command))
}

/// Capabilities whose commands policy can withhold, with those commands.
const CAP_FAMILIES: &[(&str, &[&str])] = &[
    (
        "camera",
        &[
            "camera.list",
            "camera.ptz.status",
            "camera.snap",
            "camera.clip",
            "camera.ptz.control",
        ],
    ),
    ("computer", &["computer.act"]),
    ("location", &["location.get"]),
    (
        "screen",
        &["screen.snapshot", "desktop.stream", "screen.record"],
    ),
];

/// A node's declared surface after the policy: (commands, caps, withheld commands). A
/// capability whose commands were all withheld is dropped too (OpenClaw's
/// `retainFulfilledNodeCapabilities`).
pub fn admit_surface(
    cfg: &NodesConfig,
    platform: Option<&str>,
    device_family: Option<&str>,
    caps: &[String],
    commands: &[String],
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let (admitted, withheld) = admit(cfg, platform, device_family, caps, commands);
    let caps = caps
        .iter()
        .filter(|cap| {
            CAP_FAMILIES
                .iter()
                .find(|(c, _)| c == cap)
                .is_none_or(|(_, family)| {
                    !withheld.iter().any(|w| family.contains(&w.as_str()))
                        || admitted.iter().any(|a| family.contains(&a.as_str()))
                })
        })
        .cloned()
        .collect();
    (admitted, caps, withheld)
}

/// Splits declared commands into (admitted, withheld) for a node.
pub fn admit(
    cfg: &NodesConfig,
    platform: Option<&str>,
    device_family: Option<&str>,
    caps: &[String],
    commands: &[String],
) -> (Vec<String>, Vec<String>) {
    let id = platform_id(platform, device_family);
    let talk = caps.iter().any(|c| c.eq_ignore_ascii_case("talk"))
        || commands
            .iter()
            .any(|c| c.to_lowercase().starts_with("talk."));
    let iphone = normalize(device_family) == "iphone";
    commands
        .iter()
        .cloned()
        .partition(|c| pairing_allowed(cfg, id, talk, iphone, c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn platform_needs_a_matching_family() {
        assert_eq!(platform_id(Some("linux"), Some("Linux")), "linux");
        assert_eq!(platform_id(Some("linux"), None), "unknown");
        assert_eq!(platform_id(Some("macos"), Some("Mac")), "macos");
        assert_eq!(platform_id(Some("macOS 15.1"), Some("Mac")), "macos");
        assert_eq!(platform_id(Some("ios"), None), "ios");
        assert_eq!(platform_id(None, Some("iPhone")), "ios");
        assert_eq!(platform_id(Some("plan9"), Some("Linux")), "unknown");
        assert_eq!(platform_id(Some("iPadOS 17.2"), Some("iPad")), "ios");
        assert_eq!(platform_id(Some("iOS 18"), None), "unknown");
        assert_eq!(platform_id(Some("android"), None), "android");
        assert_eq!(platform_id(Some("watchos"), Some("Apple Watch")), "watchos");
        assert_eq!(platform_id(Some("windows"), Some("Mac")), "unknown");
        assert_eq!(platform_id(None, Some("Apple Watch Ultra")), "watchos");
    }

    /// The surface OpenClaw 2026.9.6 files for its Linux node host (`openclaw node run`).
    #[test]
    fn linux_node_host_surface_matches_openclaw() {
        let declared = s(&[
            "browser.proxy",
            "browser.proxy.upload.v1",
            "desktop.stream",
            "dir.fetch",
            "dir.list",
            "file.create",
            "file.fetch",
            "file.stat",
            "file.write",
            "fs.listDir",
            "mcp.tools.call.v1",
            "ollama.chat",
            "ollama.models",
            "system.execApprovals.get",
            "system.execApprovals.set",
            "system.run",
            "system.run.prepare",
            "system.which",
            "terminal.upload",
            "workspace.memory",
            "workspace.skills",
        ]);
        let (admitted, withheld) = admit(
            &NodesConfig::default(),
            Some("linux"),
            Some("Linux"),
            &[],
            &declared,
        );
        assert_eq!(
            withheld,
            s(&[
                "dir.fetch",
                "dir.list",
                "file.create",
                "file.fetch",
                "file.stat",
                "file.write",
                "workspace.memory",
                "workspace.skills",
            ])
        );
        assert_eq!(admitted.len(), 13);
    }

    #[test]
    fn allow_and_deny_patterns() {
        let cfg = NodesConfig {
            allow_commands: s(&["camera.snap", "file.*"]),
            deny_commands: s(&["system.run"]),
            ..NodesConfig::default()
        };
        let (admitted, withheld) = admit(
            &cfg,
            Some("linux"),
            Some("Linux"),
            &[],
            &s(&[
                "camera.snap",
                "file.write",
                "system.run",
                "system.which",
                "worker.launch.v1",
            ]),
        );
        assert_eq!(admitted, s(&["camera.snap", "file.write", "system.which"]));
        assert_eq!(withheld, s(&["system.run", "worker.launch.v1"]));
    }
}
