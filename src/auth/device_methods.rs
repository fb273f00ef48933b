//! The device pairing methods (`device.pair.*`, `device.token.*`, `device.mfa.enroll`) and
//! the `device.pair.requested|resolved` events: the shard-facing half of [`super::pairing`],
//! whose pending requests and connect-time terms they act on.
//!
//! Every change of the paired-device store is answered only once it is on disk (its
//! [`Ticket`] resolved, see [`super::store_writer`]): an approval, a removal or a revocation
//! told to an operator, and a token or a TOTP secret handed out, must survive a crash. The
//! wait is asynchronous; the shard goes on meanwhile.

use std::rc::Rc;

use serde_json::{json, Value};

use super::pairing::{policy_for, PendingRequest};
use super::store::{ApproveTerms, PairedDevice, StoreError};
use super::store_writer::Ticket;
use super::totp;
use crate::addr::Caller;
use crate::clock::now_ms;
use crate::protocol::error::GatewayError;
use crate::protocol::method::DeviceMethod;
use crate::protocol::params::required_str;
use crate::shard::GatewayShard;
use crate::transport::conn::Conn;

/// Sends `device.pair.requested` for requests filed since the last call (called by the
/// connection's shard right after a handshake).
pub fn announce(shard: &Rc<GatewayShard>) {
    for r in shard.shared().pairing.take_unannounced(now_ms()) {
        tracing::info!(shard = %shard.id(), request = %r.request_id, device = %r.approve.device_id,
            network = r.network.as_str(), "pairing requested");
        emit(shard, "device.pair.requested", r.to_json());
    }
}

/// Sends a pairing event to every operator allowed to act on it, on every shard.
fn emit(shard: &Rc<GatewayShard>, name: &'static str, payload: Value) {
    let text = payload.to_string();
    shard.broadcast(move |s| s.event_local_all(name, &text, true, false, Conn::may_pair));
}

fn store_err(e: StoreError) -> GatewayError {
    match e {
        StoreError::UnknownDevice(id) => GatewayError::NotFound(format!("unknown device {id}")),
        e @ StoreError::RoleNotPaired { .. } => GatewayError::NotFound(e.to_string()),
        e @ StoreError::InvalidDevice { .. } => GatewayError::InvalidParams(e.to_string()),
        e => {
            tracing::error!(error = %e, "pairing store");
            GatewayError::AgentFailed(format!("pairing store: {e}"))
        }
    }
}

/// A paired device as listed: everything but secrets.
pub fn device_json(d: &PairedDevice) -> Value {
    let tokens: Vec<Value> = d
        .tokens
        .values()
        .map(|t| {
            json!({"role": t.role, "scopes": t.scopes, "createdAtMs": t.created_at_ms,
                   "rotatedAtMs": t.rotated_at_ms, "revokedAtMs": t.revoked_at_ms,
                   "expiresAtMs": t.expires_at_ms})
        })
        .collect();
    json!({
        "deviceId": d.device_id, "publicKey": d.public_key, "displayName": d.display_name,
        "platform": d.platform, "clientId": d.client_id, "clientMode": d.client_mode,
        "roles": d.roles, "scopes": d.scopes, "tokens": tokens,
        "createdAtMs": d.created_at_ms, "approvedAtMs": d.approved_at_ms,
        "certBound": d.cert_sha256.is_some(), "mfaEnrolled": d.totp_secret.is_some(),
    })
}

/// Waits for a change to be on disk; its write error as the method's.
async fn on_disk(t: Ticket) -> Result<(), GatewayError> {
    t.wait().await.map_err(|e| store_err(StoreError::from(e)))
}

/// Runs a pairing method (scope `operator.pairing`, checked by authz).
pub async fn call(
    shard: &Rc<GatewayShard>,
    caller: &Caller,
    m: DeviceMethod,
    p: &Value,
) -> Result<Value, GatewayError> {
    let shared = &shard.shared();
    let now = now_ms();
    let by = caller.auth.actor();
    match m {
        DeviceMethod::PairSetupCode => {
            super::bootstrap::setup_code(
                &shard.shared().bootstrap,
                shard.config(),
                shard.shared().listen,
                p,
            )
            .await
        }
        DeviceMethod::PairList => {
            let pending: Vec<Value> = shared
                .pairing
                .list(now)
                .iter()
                .map(PendingRequest::to_json)
                .collect();
            let paired: Vec<Value> = shared.store.list().iter().map(device_json).collect();
            Ok(json!({"pending": pending, "paired": paired}))
        }
        DeviceMethod::PairApprove => {
            let id = required_str(p, "requestId")?;
            let r = shared
                .pairing
                .take(id, now)
                .ok_or_else(|| GatewayError::ApprovalNotFound(id.to_owned()))?;
            let policy = policy_for(shard.config(), r.network);
            let terms = ApproveTerms {
                token_lifetime_ms: policy.token_lifetime.map(|m| m.0 as i64),
                cert_sha256: r.cert_sha256.clone(),
            };
            let written = match shared.store.approve_with(r.approve.clone(), &terms, now) {
                Ok((_, t)) => on_disk(t).await,
                Err(e) => Err(store_err(e)),
            };
            if let Err(e) = written {
                shared.pairing.restore(r);
                return Err(e);
            }
            let device = shared
                .store
                .get(&r.approve.device_id)
                .map(|d| device_json(&d))
                .unwrap_or(Value::Null);
            tracing::info!(request = %id, device = %r.approve.device_id, by = %by, "pairing approved");
            emit(
                shard,
                "device.pair.resolved",
                json!({"requestId": id, "deviceId": r.approve.device_id, "decision": "approved", "ts": now}),
            );
            Ok(json!({"requestId": id, "device": device}))
        }
        DeviceMethod::PairReject => {
            let id = required_str(p, "requestId")?;
            let r = shared
                .pairing
                .take(id, now)
                .ok_or_else(|| GatewayError::ApprovalNotFound(id.to_owned()))?;
            tracing::info!(request = %id, device = %r.approve.device_id, by = %by, "pairing rejected");
            emit(
                shard,
                "device.pair.resolved",
                json!({"requestId": id, "deviceId": r.approve.device_id, "decision": "rejected", "ts": now}),
            );
            Ok(json!({"requestId": id, "deviceId": r.approve.device_id}))
        }
        DeviceMethod::PairRemove => {
            let dev = required_str(p, "deviceId")?;
            let (removed, t) = shared.store.remove(dev);
            // A node's approved surface belongs to its device (as in OpenClaw).
            let (node_removed, node_t) = shared.node_pairing.remove(dev, now);
            on_disk(t).await?;
            let node_removed = match node_t.wait().await {
                Ok(()) => node_removed,
                Err(e) => {
                    tracing::error!(error = %e, "node pairing store");
                    false
                }
            };
            if node_removed {
                crate::node::pair_methods::sync(shard, dev);
            }
            if !removed && !node_removed {
                return Err(GatewayError::InvalidParams("unknown deviceId".into()));
            }
            tracing::info!(device = %dev, by = %by, "device unpaired");
            shard.close_device(dev, None, "device removed");
            Ok(json!({"deviceId": dev, "removed": true}))
        }
        DeviceMethod::TokenRotate => {
            let dev = required_str(p, "deviceId")?;
            let role = p.get("role").and_then(|r| r.as_str()).unwrap_or("operator");
            let (t, written) = shared.store.rotate(dev, role, now).map_err(store_err)?;
            on_disk(written).await?;
            tracing::info!(device = %dev, role = %role, by = %by, "device token rotated");
            // The new token goes back in band only to the device itself (OpenClaw: another
            // operator never sees a device's credential), and the sessions of the old token
            // end (but not the caller's own, which must receive the new token).
            let own = caller.auth.device_id.as_deref() == Some(dev);
            if !own {
                shard.close_device(dev, Some(role), "device token rotated");
            }
            let mut out = json!({"deviceId": dev, "role": role, "scopes": t.scopes,
                                 "rotatedAtMs": t.rotated_at_ms, "expiresAtMs": t.expires_at_ms,
                                 "tokenDelivery": if own { "in-band" } else { "withheld-cross-device" }});
            if own {
                out["token"] = json!(t.token);
            }
            Ok(out)
        }
        DeviceMethod::TokenRevoke => {
            let dev = required_str(p, "deviceId")?;
            let role = p.get("role").and_then(|r| r.as_str()).unwrap_or("operator");
            on_disk(shared.store.revoke(dev, role, now).map_err(store_err)?).await?;
            tracing::info!(device = %dev, role = %role, by = %by, "device token revoked");
            shard.close_device(dev, Some(role), "device token revoked");
            let at = shared
                .store
                .get(dev)
                .and_then(|d| d.tokens.get(role).and_then(|t| t.revoked_at_ms));
            Ok(json!({"deviceId": dev, "role": role, "revokedAtMs": at}))
        }
        DeviceMethod::MfaEnroll => {
            let dev = required_str(p, "deviceId")?;
            let secret = totp::generate_secret();
            let written = shared
                .store
                .set_totp(dev, Some(secret.clone()))
                .map_err(store_err)?;
            on_disk(written).await?;
            tracing::info!(device = %dev, by = %by, "TOTP enrolled");
            Ok(
                json!({"deviceId": dev, "secret": secret, "otpauthUrl": totp::otpauth_url(&secret, dev),
                      "algorithm": "SHA1", "digits": totp::DIGITS, "period": totp::STEP_SECS}),
            )
        }
    }
}
