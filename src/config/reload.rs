//! What a reload changed: the keys whose value differs, by their dotted name.

#[allow(unused_imports)]
use super::*;

/// The keys whose value differs between `old` and `new`, by their dotted name
/// (`dingtalk.rate_limit`); a secret is named when it changed, never shown.
pub fn changed_keys(old: &Settings, new: &Settings) -> Vec<String> {
    fn walk(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        match (a, b) {
            (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let null = serde_json::Value::Null;
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&path, x.get(k).unwrap_or(&null), y.get(k).unwrap_or(&null), out);
                }
            }
            _ if a != b => out.push(prefix.to_owned()),
            _ => {}
        }
    }
    let mut out = Vec::new();
    let (a, b) = (serde_json::to_value(old), serde_json::to_value(new));
    if let (Ok(a), Ok(b)) = (a, b) {
        walk("", &a, &b, &mut out);
    }
    let secrets = [
        (
            "dingtalk.app_secret",
            &old.dingtalk.app_secret,
            &new.dingtalk.app_secret,
        ),
        (
            "dingtalk.suite_secret",
            &old.dingtalk.suite_secret,
            &new.dingtalk.suite_secret,
        ),
        (
            "dingtalk.suite_ticket",
            &old.dingtalk.suite_ticket,
            &new.dingtalk.suite_ticket,
        ),
    ];
    let same = |a: &Option<SecretString>, b: &Option<SecretString>| {
        a.as_ref().map(ExposeSecret::expose_secret) == b.as_ref().map(ExposeSecret::expose_secret)
    };
    for (name, a, b) in secrets {
        if !same(a, b) {
            out.push(name.to_owned());
        }
    }
    for (name, a) in &old.alerts.destinations {
        if let Some(b) = new.alerts.destinations.get(name) {
            if !same(&a.access_token, &b.access_token) {
                out.push(format!("alerts.destinations.{name}.access_token"));
            }
            if !same(&a.secret, &b.secret) {
                out.push(format!("alerts.destinations.{name}.secret"));
            }
        }
    }
    out
}
