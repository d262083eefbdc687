//! Signature quotas: per client and key pair, and per key over all clients.
//!
//! Windows are fixed, not sliding: a per-minute quota counts the signatures of the current UTC
//! minute (hh:mm:00 to hh:mm:59) and a per-day quota those of the current UTC day. A burst may
//! therefore reach twice a quota across a window boundary.
//!
//! A request counts once it passed every policy check and reaches the token, even if the token
//! then fails. The counts are not stored separately: at startup they are rebuilt from today's
//! `sign` records whose result is `ok` or `failed`, which are durable before any signature is
//! returned, so they survive a restart and a crash.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::audit::{AuditEvent, AuditRecord, AuditResult, read_lines};
use crate::policy::Quota;

const SECONDS_PER_MINUTE: i64 = 60;
const SECONDS_PER_DAY: i64 = 86_400;

/// What one counter counts.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Subject {
    /// Signatures by one client with one key.
    ClientKey { key_id: String, key: String },
    /// Signatures with one key by any client.
    Key(String),
}

#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    minute: i64,
    in_minute: u32,
    day: i64,
    in_day: u32,
}

impl Counts {
    fn roll(&mut self, now: i64) {
        let (minute, day) = (
            now.div_euclid(SECONDS_PER_MINUTE),
            now.div_euclid(SECONDS_PER_DAY),
        );
        if minute != self.minute {
            self.minute = minute;
            self.in_minute = 0;
        }
        if day != self.day {
            self.day = day;
            self.in_day = 0;
        }
    }

    /// Returns the window that is full under `quota`, if any.
    fn exceeded(&self, quota: &Quota) -> Option<&'static str> {
        if quota
            .per_minute
            .is_some_and(|limit| self.in_minute >= limit)
        {
            return Some("minute");
        }
        quota
            .per_day
            .is_some_and(|limit| self.in_day >= limit)
            .then_some("day")
    }

    fn add(&mut self) {
        self.in_minute += 1;
        self.in_day += 1;
    }
}

/// The signature counters of the running server.
#[derive(Debug, Default)]
pub struct Quotas {
    counts: Mutex<HashMap<Subject, Counts>>,
}

/// The quotas that apply to one request.
#[derive(Debug)]
pub struct Charge<'a> {
    /// KeyId of the client.
    pub key_id: &'a str,
    /// Policy key name.
    pub key: &'a str,
    /// Quota of the client entry.
    pub client_quota: Quota,
    /// Quota of the key entry.
    pub key_quota: Quota,
}

impl Quotas {
    /// Rebuilds today's counts from the audit log files `files`, oldest first. Unreadable
    /// files and lines are skipped with a warning.
    pub fn from_audit(files: &[PathBuf], now: OffsetDateTime) -> Self {
        let quotas = Self::default();
        let today = now.unix_timestamp().div_euclid(SECONDS_PER_DAY);
        for path in files {
            let lines = match read_lines(path) {
                Ok(lines) => lines,
                Err(error) => {
                    tracing::warn!(%error, "audit file skipped while counting quotas");
                    continue;
                }
            };
            for (_, line) in lines {
                quotas.count_line(&line, today);
            }
        }
        quotas
    }

    fn count_line(&self, line: &str, today: i64) {
        let Ok(record) = serde_json::from_str::<AuditRecord>(line) else {
            return;
        };
        let counted = record.event == AuditEvent::Sign
            && matches!(record.result, AuditResult::Ok | AuditResult::Failed);
        let time = OffsetDateTime::parse(&record.time, &Rfc3339).map(|t| t.unix_timestamp());
        let (Some(key_id), Some(key), Ok(time)) = (record.key_id, record.key, time) else {
            return;
        };
        if counted && time.div_euclid(SECONDS_PER_DAY) == today {
            let mut counts = self.lock();
            for subject in subjects(&key_id, &key) {
                let entry = counts.entry(subject).or_default();
                entry.roll(time);
                entry.add();
            }
        }
    }

    /// Counts one signature if neither quota of `charge` is used up at `now`.
    ///
    /// # Errors
    ///
    /// A message that names the full quota and when it resets.
    pub fn reserve(&self, charge: &Charge<'_>, now: OffsetDateTime) -> Result<(), String> {
        let now = now.unix_timestamp();
        let mut counts = self.lock();
        let [pair, key] = subjects(charge.key_id, charge.key);
        let quotas = [
            (
                pair,
                charge.client_quota,
                format!("credential {} with key {}", charge.key_id, charge.key),
            ),
            (
                key,
                charge.key_quota,
                format!("key {} by all clients", charge.key),
            ),
        ];
        for (subject, quota, who) in &quotas {
            let entry = counts.entry(subject.clone()).or_default();
            entry.roll(now);
            if let Some(window) = entry.exceeded(quota) {
                return Err(quota_message(who, window, quota));
            }
        }
        for (subject, _, _) in quotas {
            counts.entry(subject).or_default().add();
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Subject, Counts>> {
        // Counters stay consistent after a panic elsewhere, so a poisoned lock is recovered.
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn subjects(key_id: &str, key: &str) -> [Subject; 2] {
    [
        Subject::ClientKey {
            key_id: key_id.to_owned(),
            key: key.to_owned(),
        },
        Subject::Key(key.to_owned()),
    ]
}

fn quota_message(who: &str, window: &str, quota: &Quota) -> String {
    let limit = match window {
        "minute" => quota.per_minute,
        _ => quota.per_day,
    };
    format!(
        "signature quota exceeded: {who} may make {} signatures per UTC {window}; \
         retry in the next {window}",
        limit.unwrap_or(0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(per_minute: Option<u32>, per_day: Option<u32>) -> Charge<'static> {
        Charge {
            key_id: "kr_a",
            key: "release-rsa",
            client_quota: Quota {
                per_minute,
                per_day,
            },
            key_quota: Quota::default(),
        }
    }

    fn at(text: &str) -> OffsetDateTime {
        OffsetDateTime::parse(text, &Rfc3339).unwrap()
    }

    #[test]
    fn minute_quota_resets_next_minute() {
        let quotas = Quotas::default();
        let charge = charge(Some(2), None);

        assert!(quotas.reserve(&charge, at("2026-12-04T10:00:01Z")).is_ok());
        assert!(quotas.reserve(&charge, at("2026-12-04T10:00:30Z")).is_ok());
        let error = quotas
            .reserve(&charge, at("2026-12-04T10:00:59Z"))
            .unwrap_err();
        assert!(error.contains("2 signatures per UTC minute"), "{error}");
        assert!(quotas.reserve(&charge, at("2026-12-04T10:01:00Z")).is_ok());
    }

    #[test]
    fn day_quota_resets_at_utc_midnight() {
        let quotas = Quotas::default();
        let charge = charge(None, Some(1));

        assert!(quotas.reserve(&charge, at("2026-12-04T23:59:00Z")).is_ok());
        assert!(quotas.reserve(&charge, at("2026-12-04T23:59:59Z")).is_err());
        assert!(quotas.reserve(&charge, at("2026-12-05T00:00:00Z")).is_ok());
    }

    #[test]
    fn key_quota_shared_by_clients() {
        let quotas = Quotas::default();
        let mut first = charge(None, None);
        first.key_quota.per_minute = Some(1);
        let mut second = charge(None, None);
        second.key_id = "kr_b";
        second.key_quota.per_minute = Some(1);
        let now = at("2026-12-04T10:00:00Z");

        assert!(quotas.reserve(&first, now).is_ok());
        let error = quotas.reserve(&second, now).unwrap_err();
        assert!(error.contains("by all clients"), "{error}");
    }

    #[test]
    fn counts_rebuilt_from_audit_lines() {
        let quotas = Quotas::default();
        let line = r#"{"time":"2026-12-04T10:00:00.000001Z","seq":0,"prev_sha256":"","event":"sign","key_id":"kr_a","client":null,"caller":null,"token":null,"key":"release-rsa","certificate_sha256":null,"mechanism":null,"mechanism_parameter":null,"input":null,"data_sha256":null,"signature_sha256":null,"result":"ok","reason":null,"latency_us":1,"anchor":null}"#;
        let now = at("2026-12-04T10:00:10Z");
        quotas.count_line(line, now.unix_timestamp().div_euclid(SECONDS_PER_DAY));

        assert!(quotas.reserve(&charge(Some(1), None), now).is_err());
    }
}
