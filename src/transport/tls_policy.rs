//! The names of the TLS policy (`security.transport.tls`: minimum version, cipher suites) as
//! rustls knows them. Pure, so config validation checks them without touching files.

/// Maps a suite name of the config to rustls's spelling (`TLS_AES_…` → `TLS13_AES_…`).
pub(crate) fn suite_key(name: &str) -> String {
    let n = name.trim().to_ascii_uppercase().replace('-', "_");
    match n.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => n,
    }
}

/// Checks `security.transport.tls` without touching files (for `Config::validate`).
pub fn check_policy(min_version: &str, ciphers: &[String]) -> Result<bool, String> {
    let min13 = match min_version.trim().to_ascii_lowercase().as_str() {
        "tlsv1.3" | "1.3" | "tls1.3" | "tlsv13" => true,
        "tlsv1.2" | "1.2" | "tls1.2" | "tlsv12" => false,
        other => {
            return Err(format!(
                "unknown TLS version {other:?} (TLSv1.3 or TLSv1.2)"
            ))
        }
    };
    let known: Vec<String> = rustls::crypto::ring::ALL_CIPHER_SUITES
        .iter()
        .filter_map(|s| s.suite().as_str().map(suite_key))
        .collect();
    for c in ciphers {
        if !known.contains(&suite_key(c)) {
            return Err(format!(
                "unknown cipher suite {c:?} (known: {})",
                known.join(", ")
            ));
        }
    }
    Ok(min13)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_names() {
        assert_eq!(check_policy("TLSv1.3", &[]), Ok(true));
        assert_eq!(check_policy("1.2", &[]), Ok(false));
        assert!(check_policy("TLSv1.1", &[]).is_err());
        let ok = [
            "TLS_AES_256_GCM_SHA384".to_string(),
            "TLS13_CHACHA20_POLY1305_SHA256".into(),
        ];
        assert!(check_policy("TLSv1.3", &ok).is_ok());
        let bad = ["TLS_RSA_WITH_RC4_128_MD5".to_string()];
        assert!(check_policy("TLSv1.3", &bad)
            .unwrap_err()
            .contains("unknown cipher"));
    }
}
