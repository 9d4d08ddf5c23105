//! docs/protocol.md, the producer's side: key names, job ids, RQ timestamps, the payload,
//! the job hash and the MULTI/HSET/RPUSH/SADD/EXEC that enqueues it. The same commands as
//! `worker/queue/producer.py`, field for field.

use std::fs::File;
use std::io::Read;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::json::Value;
use crate::resp::{Connection, Error, Reply};

// worker/queue/names.py: extend, never rename.
pub const DEFAULT_QUEUE: &str = "qr";
pub const JOB_FUNCTION: &str = "jobs.scan";
pub const RESULTS_STREAM: &str = "qrw:results";
pub const REPLY_PREFIX: &str = "qrw:reply:";
pub const RQ_QUEUES: &str = "rq:queues";

pub fn rq_job_key(job_id: &str) -> String {
    format!("rq:job:{}", job_id)
}

pub fn rq_queue_key(queue: &str) -> String {
    format!("rq:queue:{}", queue)
}

/// The most images one batch job may carry (docs/protocol.md, `images`).
pub const MAX_BATCH: usize = 100;
/// The job hash's `timeout` range, whole seconds.
pub const MAX_TIMEOUT: u32 = 3600;

/// A random (version 4) UUID, as `uuid::Uuid::new_v4().to_string()` writes it: a valid job
/// id (letters, digits and `-`) and a fresh reply-list name.
pub fn new_uuid() -> String {
    let mut bytes = [0u8; 16];
    let random = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if random.is_err() {
        // No /dev/urandom (not Linux or BSD): std's hasher keys are seeded by the OS.
        use std::collections::hash_map::RandomState;
        use std::hash::{BuildHasher, Hasher};
        for (i, chunk) in bytes.chunks_mut(8).enumerate() {
            let mut hasher = RandomState::new().build_hasher();
            hasher.write_usize(i);
            hasher.write_u128(now_micros() as u128);
            chunk.copy_from_slice(&hasher.finish().to_le_bytes());
        }
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
    let hex: String = bytes.iter().map(|b| format!("{:02x}", b)).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// RQ's timestamp format: UTC, `%Y-%m-%dT%H:%M:%S.%fZ` (microseconds, a trailing Z), as
/// `chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ")` writes it.
pub fn rq_timestamp(micros_since_epoch: i64) -> String {
    let secs = micros_since_epoch.div_euclid(1_000_000);
    let micros = micros_since_epoch.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        year,
        month,
        day,
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        micros
    )
}

pub fn rq_timestamp_now() -> String {
    rq_timestamp(now_micros())
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    (year, month, day)
}

/// What one job asks for. A production service would `#[derive(Serialize)]` this with
/// `#[serde(skip_serializing_if = "Option::is_none")]` on the optional fields.
#[derive(Debug, Clone, Default)]
pub struct Payload {
    /// One reference (`image`), or a batch (`images`) when there are several or `batch` is set.
    pub images: Vec<String>,
    pub batch: bool,
    pub request_id: Option<String>,
    pub reply_to: Option<String>,
    pub want: Option<String>,
    pub deadline_ms: Option<u32>,
}

impl Payload {
    pub fn to_value(&self) -> Value {
        let mut fields = Vec::new();
        if self.batch {
            let refs = self.images.iter().map(|r| Value::str(r.as_str())).collect();
            fields.push(("images".to_string(), Value::Array(refs)));
        } else {
            fields.push(("image".to_string(), Value::str(self.images[0].as_str())));
        }
        if let Some(id) = &self.request_id {
            fields.push(("request_id".to_string(), Value::str(id.as_str())));
        }
        if let Some(want) = &self.want {
            fields.push(("want".to_string(), Value::str(want.as_str())));
        }
        if let Some(ms) = self.deadline_ms {
            fields.push(("deadline_ms".to_string(), Value::int(ms.into())));
        }
        if let Some(reply_to) = &self.reply_to {
            fields.push(("reply_to".to_string(), Value::str(reply_to.as_str())));
        }
        Value::Object(fields)
    }
}

/// The job hash's `data`: `["jobs.scan", null, [payload], {}]` as compact JSON text.
pub fn job_data(payload: &Payload) -> String {
    Value::Array(vec![
        Value::str(JOB_FUNCTION),
        Value::Null,
        Value::Array(vec![payload.to_value()]),
        Value::Object(Vec::new()),
    ])
    .to_json()
}

/// The fields of `rq:job:<job_id>`, in the order docs/protocol.md lists them.
pub fn job_hash(
    payload: &Payload,
    queue: &str,
    timeout: u32,
    now: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("data", job_data(payload)),
        ("origin", queue.to_string()),
        ("status", "queued".to_string()),
        ("created_at", now.to_string()),
        ("enqueued_at", now.to_string()),
        ("timeout", timeout.to_string()),
        ("description", format!("{}(...)", JOB_FUNCTION)),
    ]
}

/// How long one `WAIT` waits for the replicas, and how many times an enqueue they did not
/// confirm is sent again (docs/protocol.md, *Replication*).
pub const REPLICA_WAIT_MS: u32 = 2000;
pub const REPLICATED_ATTEMPTS: u32 = 4;

/// Enqueues one job in one transaction:
/// `MULTI; HSET rq:job:<id> ...; RPUSH rq:queue:<queue> <id>; SADD rq:queues ...; EXEC`.
/// With the `redis` crate: `redis::pipe().atomic().hset_multiple(..).rpush(..).sadd(..)`.
///
/// `replicas` > 0 (a replicated Redis behind Sentinel): `WAIT <replicas> 2000` follows the
/// `EXEC` on the same connection, in the same round trip (WAIT counts that connection's
/// writes, and cannot go inside MULTI). The job counts as queued only once that many
/// replicas hold it: a job only the master held would be lost with it in a failover.
/// Otherwise the same transaction (same id, same `created_at`) is sent again, which is
/// safe: the job still runs and is answered once. With the `redis` crate: the same pipe,
/// then `redis::cmd("WAIT").arg(replicas).arg(2000)` on the same connection.
pub fn enqueue(
    conn: &mut Connection,
    job_id: &str,
    payload: &Payload,
    queue: &str,
    timeout: u32,
    replicas: u32,
) -> Result<(), Error> {
    // One timestamp for every send: a send again is the same enqueue, not a new job.
    let now = rq_timestamp_now();
    let mut held = 0;
    for attempt in 0..REPLICATED_ATTEMPTS.max(1) {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(500 << (attempt - 1)));
        }
        held = enqueue_once(conn, job_id, payload, queue, timeout, &now, replicas)?;
        if held >= i64::from(replicas) {
            return Ok(());
        }
    }
    Err(Error::Server(format!(
        "{} of {} replica(s) confirmed job {} in time: it may be queued on the master alone; \
         sending it again (same id) is safe",
        held, replicas, job_id
    )))
}

/// One send of the transaction (and its WAIT); how many replicas confirmed it (0 without
/// WAIT).
fn enqueue_once(
    conn: &mut Connection,
    job_id: &str,
    payload: &Payload,
    queue: &str,
    timeout: u32,
    now: &str,
    replicas: u32,
) -> Result<i64, Error> {
    let mut hset = vec![b"HSET".to_vec(), rq_job_key(job_id).into_bytes()];
    for (field, value) in job_hash(payload, queue, timeout, now) {
        hset.push(field.as_bytes().to_vec());
        hset.push(value.into_bytes());
    }
    let queue_key = rq_queue_key(queue);
    let mut commands = vec![
        vec![b"MULTI".to_vec()],
        hset,
        vec![
            b"RPUSH".to_vec(),
            queue_key.clone().into_bytes(),
            job_id.as_bytes().to_vec(),
        ],
        vec![
            b"SADD".to_vec(),
            RQ_QUEUES.as_bytes().to_vec(),
            queue_key.into_bytes(),
        ],
        vec![b"EXEC".to_vec()],
    ];
    if replicas > 0 {
        commands.push(vec![
            b"WAIT".to_vec(),
            replicas.to_string().into_bytes(),
            REPLICA_WAIT_MS.to_string().into_bytes(),
        ]);
    }
    let mut replies = conn.pipeline(&commands)?;
    let confirmed = if replicas > 0 {
        match replies.pop() {
            Some(Reply::Integer(n)) => n,
            Some(Reply::Error(message)) => return Err(Error::Server(message)),
            other => return Err(Error::Protocol(format!("WAIT answered {:?}", other))),
        }
    } else {
        0
    };
    // Every queued command answers +QUEUED (or an error, which makes EXEC abort); EXEC
    // answers one reply per command, or nil when the transaction was discarded.
    for reply in &replies[..replies.len() - 1] {
        if let Reply::Error(message) = reply {
            return Err(Error::Server(message.clone()));
        }
    }
    let results = match replies.last() {
        Some(Reply::Array(results)) if results.len() == 3 => results,
        Some(Reply::Error(message)) => return Err(Error::Server(message.clone())),
        other => return Err(Error::Protocol(format!("EXEC answered {:?}", other))),
    };
    // Redis runs the rest of a transaction when one command fails (no rollback): what
    // happened depends on which one.
    match (&results[0], &results[1], &results[2]) {
        (_, Reply::Error(message), _) => {
            // Not queued, so no worker will ever read the hash: take it back.
            let _ = conn.command(&["DEL", rq_job_key(job_id).as_str()]);
            Err(Error::Server(format!(
                "{} (the job was not queued)",
                message
            )))
        }
        (Reply::Error(message), _, _) => {
            // Queued without its hash: a worker answers it with invalid_payload.
            Err(Error::Server(format!(
                "{} (the job hash was not written)",
                message
            )))
        }
        (_, _, Reply::Error(message)) => {
            // rq:queues only makes the queue visible to RQ's tools: the job is queued.
            eprintln!("qr-producer: SADD {} failed: {}", RQ_QUEUES, message);
            Ok(confirmed)
        }
        _ => Ok(confirmed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rq_format_in_utc() {
        assert_eq!(rq_timestamp(0), "1970-01-01T00:00:00.000000Z");
        // 2026-11-27T18:00:00.123456Z
        assert_eq!(
            rq_timestamp(1_795_802_400_123_456),
            "2026-11-27T18:00:00.123456Z"
        );
        // A leap day, and the turn of a century that is a leap year.
        assert_eq!(
            rq_timestamp(951_782_400_000_001),
            "2000-02-29T00:00:00.000001Z"
        );
    }

    #[test]
    fn job_ids_are_uuid4_text() {
        let id = new_uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(id.chars().all(|c| c.is_ascii_hexdigit() || c == '-'));
        assert_ne!(id, new_uuid());
    }

    #[test]
    fn job_data_has_the_shape_the_worker_checks() {
        let payload = Payload {
            images: vec!["file:///r/a.png".into()],
            request_id: Some("inv-1".into()),
            reply_to: Some("qrw:reply:x".into()),
            ..Payload::default()
        };
        assert_eq!(
            job_data(&payload),
            r#"["jobs.scan",null,[{"image":"file:///r/a.png","request_id":"inv-1","reply_to":"qrw:reply:x"}],{}]"#
        );
        let batch = Payload {
            images: vec!["s3://b/1".into()],
            batch: true,
            ..Payload::default()
        };
        assert_eq!(
            job_data(&batch),
            r#"["jobs.scan",null,[{"images":["s3://b/1"]}],{}]"#
        );
    }
}
