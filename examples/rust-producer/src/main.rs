//! qr-producer: enqueue qr-worker scan jobs and collect their results, with nothing but
//! Redis commands (docs/protocol.md). Standard library only.
//!
//! Exit status: 0 every job ok, 1 a job failed or timed out (or Redis failed), 2 usage.

mod json;
mod protocol;
mod report;
mod resp;

use std::collections::HashSet;
use std::env;
use std::ffi::OsString;
use std::io::{self, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use json::Value;
use protocol::{Payload, DEFAULT_QUEUE, MAX_BATCH, MAX_TIMEOUT, REPLY_PREFIX, RESULTS_STREAM};
use resp::{Connection, RedisUrl, Reply};

const USAGE: &str = "\
usage: qr-producer [--redis URL] [--queue NAME] [--batch] [--collect GROUP] REF...

Enqueues one scan job per REF (s3://bucket/key or file:///path), or one batch job for all
of them with --batch, waits for the results on a reply list (BLPOP) and prints each one's
codes and timings. With --collect GROUP the results are read from the qrw:results stream
through a consumer group instead (XREADGROUP, then XACK), as a billing service collects in
bulk; without REFs it only collects.

options:
  --redis URL          redis://[[user]:password@]host[:port][/db] (default: $REDIS_URL, else
                       redis://127.0.0.1:6379/0)
  --queue NAME         the queue to push to (default: qr)
  --batch              one job for all REFs (1 to 100) instead of one job each
  --collect GROUP      collect from qrw:results as a member of consumer group GROUP (created
                       at the stream's end when missing)
  --consumer NAME      the consumer's name in the group (default: the host name); keep it
                       across restarts so a collector gets back what it read but never acked
  --count N            collector without REFs: stop after N results (default: never)
  --idle SECONDS       collector without REFs: stop after SECONDS without a result (default: never)
  --wait SECONDS       how long to wait for the jobs' results (default: 60; 0: print the job
                       ids and exit without waiting)
  --timeout SECONDS    the job's hard limit, 1 to 3600 (default: 60, or 30 per image for a
                       batch, at least 60)
  --request-id ID      the payload's request_id (ID-1, ID-2, ... for several jobs; default:
                       qr-producer-<pid>-<n>)
  --want all|first     read every code (default) or stop at the first
  --deadline-ms N      the job's budget, fetches included, 1 to 600000
  --replicas N         a replicated Redis: each job counts as queued only once N replicas
                       hold it (WAIT N 2000 after EXEC; sent again, same id, up to 4 times)
                       (default: 0, no WAIT)
  --json               print each result document as it came (one JSON line) instead of text
  -h, --help           this text

exit status: 0 every result ok, 1 a job failed or gave no result in time (or Redis failed),
2 usage error";

/// The longest --wait or --idle: a year (longer would overflow a deadline).
const MAX_SECONDS: f64 = 365.0 * 86_400.0;

#[derive(Debug)]
struct Options {
    redis: String,
    queue: String,
    batch: bool,
    collect: Option<String>,
    consumer: Option<String>,
    count: Option<u64>,
    idle: Option<f64>,
    wait: f64,
    timeout: Option<u32>,
    request_id: Option<String>,
    want: Option<String>,
    deadline_ms: Option<u32>,
    replicas: u32,
    json: bool,
    refs: Vec<String>,
}

enum Parsed {
    Run(Box<Options>),
    Help,
}

fn number<T: std::str::FromStr>(
    flag: &str,
    text: &str,
    ok: impl Fn(&T) -> bool,
) -> Result<T, String> {
    text.parse::<T>()
        .ok()
        .filter(|n| ok(n))
        .ok_or_else(|| format!("{}: not a valid value: {:?}", flag, text))
}

fn parse_args(args: Vec<OsString>) -> Result<Parsed, String> {
    let mut opts = Options {
        redis: env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_string()),
        queue: DEFAULT_QUEUE.to_string(),
        batch: false,
        collect: None,
        consumer: None,
        count: None,
        idle: None,
        wait: 60.0,
        timeout: None,
        request_id: None,
        want: None,
        deadline_ms: None,
        replicas: 0,
        json: false,
        refs: Vec::new(),
    };
    let mut args = args.into_iter();
    let mut only_refs = false;
    while let Some(arg) = args.next() {
        // References travel as JSON text: they must be Unicode (the worker refuses the rest).
        let arg = arg
            .into_string()
            .map_err(|a| format!("not valid UTF-8: {:?}", a))?;
        if only_refs || !arg.starts_with('-') || arg == "-" {
            opts.refs.push(arg);
            continue;
        }
        let (flag, inline) = match arg.find('=') {
            Some(at) if arg.starts_with("--") => {
                (arg[..at].to_string(), Some(arg[at + 1..].to_string()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = || -> Result<String, String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => args
                    .next()
                    .ok_or_else(|| format!("{} needs a value", flag))?
                    .into_string()
                    .map_err(|a| format!("not valid UTF-8: {:?}", a)),
            }
        };
        if inline.is_some() && matches!(flag.as_str(), "--batch" | "--json" | "--help") {
            return Err(format!("{} takes no value", flag));
        }
        match flag.as_str() {
            "--" => only_refs = true,
            "-h" | "--help" => return Ok(Parsed::Help),
            "--batch" => opts.batch = true,
            "--json" => opts.json = true,
            "--redis" => opts.redis = value()?,
            "--queue" => opts.queue = value()?,
            "--collect" => opts.collect = Some(value()?),
            "--consumer" => opts.consumer = Some(value()?),
            "--request-id" => opts.request_id = Some(value()?),
            "--count" => opts.count = Some(number("--count", &value()?, |n: &u64| *n > 0)?),
            "--idle" => {
                opts.idle = Some(number("--idle", &value()?, |s: &f64| {
                    *s > 0.0 && *s <= MAX_SECONDS
                })?)
            }
            "--wait" => {
                opts.wait = number("--wait", &value()?, |s: &f64| {
                    *s >= 0.0 && *s <= MAX_SECONDS
                })?
            }
            "--timeout" => {
                opts.timeout = Some(number("--timeout", &value()?, |s: &u32| {
                    (1..=MAX_TIMEOUT).contains(s)
                })?)
            }
            "--deadline-ms" => {
                opts.deadline_ms = Some(number("--deadline-ms", &value()?, |s: &u32| {
                    (1..=600_000).contains(s)
                })?)
            }
            "--replicas" => opts.replicas = number("--replicas", &value()?, |n: &u32| *n <= 16)?,
            "--want" => {
                let want = value()?;
                if want != "all" && want != "first" {
                    return Err(format!("--want: all or first, not {:?}", want));
                }
                opts.want = Some(want);
            }
            _ => return Err(format!("unknown option {}", flag)),
        }
    }
    if opts.queue.is_empty() {
        return Err("--queue must not be empty".into());
    }
    if let Some(group) = &opts.collect {
        if group.is_empty() {
            return Err("--collect: the group name must not be empty".into());
        }
    }
    if opts.refs.is_empty() && opts.collect.is_none() {
        return Err("no REF given (or --collect GROUP to only collect)".into());
    }
    if !opts.refs.is_empty() && (opts.count.is_some() || opts.idle.is_some()) {
        return Err("--count and --idle are for a collector without REFs (use --wait)".into());
    }
    if opts.collect.is_none() && opts.consumer.is_some() {
        return Err("--consumer needs --collect GROUP".into());
    }
    if opts.batch && opts.refs.len() > MAX_BATCH {
        return Err(format!(
            "a batch holds 1 to {} references, not {}",
            MAX_BATCH,
            opts.refs.len()
        ));
    }
    Ok(Parsed::Run(Box::new(opts)))
}

/// What went wrong while running, and so the exit status.
enum Failure {
    Usage(String),
    Redis(resp::Error),
}

impl From<resp::Error> for Failure {
    fn from(err: resp::Error) -> Self {
        Failure::Redis(err)
    }
}

fn connect(opts: &Options) -> Result<Connection, Failure> {
    let url =
        RedisUrl::parse(&opts.redis).map_err(|e| Failure::Usage(format!("--redis: {}", e)))?;
    Ok(Connection::open(&url, Duration::from_secs(10))?)
}

/// One payload per job: every REF in one batch job, or one job each.
fn payloads(opts: &Options, reply_to: Option<&str>) -> Vec<Payload> {
    let groups: Vec<Vec<String>> = if opts.batch {
        vec![opts.refs.clone()]
    } else {
        opts.refs.iter().map(|r| vec![r.clone()]).collect()
    };
    let several = groups.len() > 1;
    let pid = std::process::id();
    groups
        .into_iter()
        .enumerate()
        .map(|(i, images)| Payload {
            images,
            batch: opts.batch,
            request_id: Some(match (&opts.request_id, several) {
                (Some(id), false) => id.clone(),
                (Some(id), true) => format!("{}-{}", id, i + 1),
                (None, _) => format!("qr-producer-{}-{}", pid, i + 1),
            }),
            reply_to: reply_to.map(str::to_string),
            want: opts.want.clone(),
            deadline_ms: opts.deadline_ms,
        })
        .collect()
}

fn job_timeout(opts: &Options, payload: &Payload) -> u32 {
    opts.timeout.unwrap_or_else(|| {
        // A batch reads its images one after another: give each some time (docs/protocol.md:
        // "size it to the payload").
        let per_image = if payload.batch {
            30 * payload.images.len() as u32
        } else {
            60
        };
        per_image.clamp(60, MAX_TIMEOUT)
    })
}

/// Enqueues every payload; returns the job ids in order.
fn enqueue_all(
    conn: &mut Connection,
    opts: &Options,
    payloads: &[Payload],
) -> Result<Vec<String>, Failure> {
    let mut ids: Vec<String> = Vec::new();
    for payload in payloads {
        let job_id = protocol::new_uuid();
        let timeout = job_timeout(opts, payload);
        if let Err(err) =
            protocol::enqueue(conn, &job_id, payload, &opts.queue, timeout, opts.replicas)
        {
            if !ids.is_empty() {
                // Those run and get results: say which, so nobody enqueues them twice.
                eprintln!(
                    "qr-producer: {} job(s) were queued before the failure: {}",
                    ids.len(),
                    ids.join(" ")
                );
            }
            return Err(err.into());
        }
        ids.push(job_id);
    }
    Ok(ids)
}

fn print_result(opts: &Options, raw: &[u8], result: &Value, entry: Option<&str>) {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    if opts.json {
        let _ = out.write_all(raw);
        let _ = out.write_all(b"\n");
    } else {
        for line in report::lines(result, entry) {
            let _ = writeln!(out, "{}", line);
        }
    }
    let _ = out.flush();
}

/// Seconds left until `deadline`, or None once it passed.
fn left(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
}

/// Enqueue with a reply list and BLPOP it once per job (one list shared by all the jobs
/// of this run, as docs/protocol.md suggests).
fn run_reply(opts: &Options) -> Result<bool, Failure> {
    let mut conn = connect(opts)?;
    let reply_to = if opts.wait > 0.0 {
        Some(format!("{}{}", REPLY_PREFIX, protocol::new_uuid()))
    } else {
        None
    };
    let payloads = payloads(opts, reply_to.as_deref());
    let ids = enqueue_all(&mut conn, opts, &payloads)?;
    let reply_to = match reply_to {
        Some(list) => list,
        None => {
            for id in &ids {
                println!("{}", id);
            }
            return Ok(true);
        }
    };
    let mut waiting: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let mut all_ok = true;
    let deadline = Instant::now() + Duration::from_secs_f64(opts.wait);
    while !waiting.is_empty() {
        let remaining = match left(deadline) {
            Some(d) => d,
            None => break,
        };
        // BLPOP's timeout is in seconds; Redis >= 6 takes decimals, whole ones work anywhere.
        let block = remaining.as_secs().clamp(1, 30);
        conn.set_read_timeout(Duration::from_secs(block + 10))?;
        let reply = conn.command(&["BLPOP", reply_to.as_str(), block.to_string().as_str()])?;
        let raw = match reply.as_array() {
            Some([_, body]) => body.as_bytes().unwrap_or_default().to_vec(),
            _ => continue, // nil: nothing yet
        };
        let result = match json::parse(&raw) {
            Ok(result) => result,
            Err(err) => {
                eprintln!("qr-producer: a reply that is not JSON ({}): skipped", err);
                all_ok = false;
                continue;
            }
        };
        let job_id = result.get("job_id").and_then(Value::as_str).unwrap_or("");
        if !waiting.remove(job_id) {
            eprintln!(
                "qr-producer: a reply for a job this run did not enqueue ({:?}): skipped",
                job_id
            );
            continue;
        }
        all_ok &= report::is_ok(&result);
        print_result(opts, &raw, &result, None);
    }
    if !waiting.is_empty() {
        let mut missing: Vec<&str> = ids
            .iter()
            .map(String::as_str)
            .filter(|id| waiting.contains(id))
            .collect();
        missing.truncate(10);
        eprintln!(
            "qr-producer: {} job(s) gave no result within {} s: {}",
            waiting.len(),
            opts.wait,
            missing.join(" ")
        );
        return Ok(false);
    }
    Ok(all_ok)
}

/// The consumer's default name: the host's, so a restarted collector on the same host
/// reads back what it had read but not acked.
fn default_consumer() -> String {
    env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "qr-producer".to_string())
}

/// One stream entry: its id and its fields (`job_id`, `ok`, `result`, maybe `reply_error`);
/// no fields for an entry trimmed off the stream while it was pending.
type Entry = (String, Option<Vec<(String, Vec<u8>)>>);

fn entries(reply: &Reply) -> Vec<Entry> {
    let mut out = Vec::new();
    // [[stream, [[id, [field, value, ...]], ...]], ...]
    for stream in reply.as_array().unwrap_or(&[]) {
        let items = match stream.as_array() {
            Some([_, items]) => items.as_array().unwrap_or(&[]),
            _ => continue,
        };
        for item in items {
            if let Some([id, fields]) = item.as_array() {
                let id = id.to_text().unwrap_or_default();
                let fields = fields.as_array().map(|flat| {
                    flat.chunks(2)
                        .filter_map(|pair| match pair {
                            [k, v] => Some((k.to_text()?, v.as_bytes()?.to_vec())),
                            _ => None,
                        })
                        .collect()
                });
                out.push((id, fields));
            }
        }
    }
    out
}

/// Collect from qrw:results through a consumer group: XGROUP CREATE (once), then this
/// consumer's pending entries (read before but never acked: a crash between the two), then
/// new ones; every entry is printed, then acked (XACK), so each is handled at least once.
fn run_collect(opts: &Options, group: &str) -> Result<bool, Failure> {
    let mut conn = connect(opts)?;
    let consumer = opts.consumer.clone().unwrap_or_else(default_consumer);
    match conn.command(&["XGROUP", "CREATE", RESULTS_STREAM, group, "$", "MKSTREAM"]) {
        Ok(_) => eprintln!(
            "qr-producer: created consumer group {} on {}",
            group, RESULTS_STREAM
        ),
        Err(resp::Error::Server(message)) if message.starts_with("BUSYGROUP") => {}
        Err(err) => return Err(err.into()),
    }
    // Created before enqueueing: the group starts at the stream's end, so our results,
    // written after, are all delivered to it.
    let payloads = payloads(opts, None);
    let ids = enqueue_all(&mut conn, opts, &payloads)?;
    let with_refs = !opts.refs.is_empty();
    if with_refs && opts.wait == 0.0 {
        // Enqueued only: the group will hold their results for a later collector.
        for id in &ids {
            println!("{}", id);
        }
        return Ok(true);
    }
    let mut waiting: HashSet<String> = ids.into_iter().collect();
    let deadline = if with_refs {
        Some(Instant::now() + Duration::from_secs_f64(opts.wait))
    } else {
        None
    };
    let mut idle_until = opts
        .idle
        .map(|s| Instant::now() + Duration::from_secs_f64(s));
    let mut collected: u64 = 0;
    let mut all_ok = true;
    // "0" reads this consumer's pending entries (its history), ">" new ones.
    let mut pending_from = Some("0".to_string());
    loop {
        if with_refs && waiting.is_empty() {
            break;
        }
        if opts.count.map_or(false, |n| collected >= n) {
            break;
        }
        let until = match (deadline, idle_until) {
            (Some(d), _) | (None, Some(d)) => Some(d),
            (None, None) => None,
        };
        let block = match until {
            None => Duration::from_secs(5),
            Some(until) => match left(until) {
                Some(left) => left.min(Duration::from_secs(5)),
                None => break,
            },
        };
        let count = opts
            .count
            .map_or(100, |n| (n - collected).min(100))
            .to_string();
        let reply = match &pending_from {
            Some(from) => conn.command(&[
                "XREADGROUP",
                "GROUP",
                group,
                consumer.as_str(),
                "COUNT",
                count.as_str(),
                "STREAMS",
                RESULTS_STREAM,
                from.as_str(),
            ])?,
            None => {
                let ms = block.as_millis().max(1).to_string();
                conn.set_read_timeout(block + Duration::from_secs(10))?;
                conn.command(&[
                    "XREADGROUP",
                    "GROUP",
                    group,
                    consumer.as_str(),
                    "COUNT",
                    count.as_str(),
                    "BLOCK",
                    ms.as_str(),
                    "STREAMS",
                    RESULTS_STREAM,
                    ">",
                ])?
            }
        };
        let batch = entries(&reply);
        if batch.is_empty() {
            // The history is done: from now on, new entries only.
            pending_from = None;
            continue;
        }
        let mut acked: Vec<String> = Vec::new();
        for (id, fields) in &batch {
            if let Some(from) = &mut pending_from {
                *from = id.clone();
            }
            acked.push(id.clone());
            let fields = match fields {
                Some(fields) => fields,
                None => {
                    eprintln!(
                        "qr-producer: entry {} was trimmed off the stream before it was acked",
                        id
                    );
                    continue;
                }
            };
            let raw = fields
                .iter()
                .find(|(k, _)| k == "result")
                .map(|(_, v)| v.as_slice())
                .unwrap_or(b"");
            match json::parse(raw) {
                Ok(result) => {
                    let job_id = result.get("job_id").and_then(Value::as_str).unwrap_or("");
                    waiting.remove(job_id);
                    all_ok &= report::is_ok(&result);
                    print_result(opts, raw, &result, Some(id));
                }
                Err(err) => {
                    eprintln!("qr-producer: entry {} holds no JSON result ({})", id, err);
                    all_ok = false;
                }
            }
            collected += 1;
        }
        // Printed first, acked second: a crash in between re-delivers, never loses.
        let mut xack: Vec<&str> = vec!["XACK", RESULTS_STREAM, group];
        xack.extend(acked.iter().map(String::as_str));
        conn.command(&xack)?;
        idle_until = opts
            .idle
            .map(|s| Instant::now() + Duration::from_secs_f64(s));
    }
    eprintln!(
        "qr-producer: collected {} result(s) from {} as {}/{}",
        collected, RESULTS_STREAM, group, consumer
    );
    if with_refs && !waiting.is_empty() {
        eprintln!(
            "qr-producer: {} job(s) gave no result within {} s",
            waiting.len(),
            opts.wait
        );
        return Ok(false);
    }
    if let Some(n) = opts.count {
        if collected < n {
            eprintln!(
                "qr-producer: {} of {} result(s) came before --idle ran out",
                collected, n
            );
            return Ok(false);
        }
    }
    Ok(all_ok)
}

fn main() -> ExitCode {
    let opts = match parse_args(env::args_os().skip(1).collect()) {
        Ok(Parsed::Run(opts)) => *opts,
        Ok(Parsed::Help) => {
            println!("{}", USAGE);
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("qr-producer: {}\n\n{}", message, USAGE);
            return ExitCode::from(2);
        }
    };
    let outcome = match &opts.collect {
        Some(group) => run_collect(&opts, group),
        None => run_reply(&opts),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(Failure::Usage(message)) => {
            eprintln!("qr-producer: {}", message);
            ExitCode::from(2)
        }
        Err(Failure::Redis(err)) => {
            eprintln!("qr-producer: {}", err);
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, String> {
        match parse_args(args.iter().map(OsString::from).collect())? {
            Parsed::Run(opts) => Ok(*opts),
            Parsed::Help => Err("help".into()),
        }
    }

    #[test]
    fn options_and_refs() {
        let opts = parse(&[
            "--queue=q2",
            "--batch",
            "s3://b/1",
            "--timeout",
            "90",
            "--",
            "-odd",
        ])
        .unwrap();
        assert_eq!(opts.queue, "q2");
        assert!(opts.batch);
        assert_eq!(opts.timeout, Some(90));
        assert_eq!(opts.refs, vec!["s3://b/1", "-odd"]);
    }

    #[test]
    fn usage_errors() {
        assert!(parse(&[]).unwrap_err().contains("no REF"));
        assert!(parse(&["--bogus", "x"]).unwrap_err().contains("unknown"));
        assert!(parse(&["--timeout", "1.5", "x"])
            .unwrap_err()
            .contains("--timeout"));
        assert!(parse(&["--timeout", "3601", "x"]).is_err());
        assert!(parse(&["--want", "some", "x"]).is_err());
        assert!(parse(&["--count", "3", "x"])
            .unwrap_err()
            .contains("--count"));
        assert!(parse(&["--queue"]).unwrap_err().contains("needs a value"));
        assert!(parse(&["--wait", "1e300", "x"])
            .unwrap_err()
            .contains("--wait"));
        assert!(parse(&["--wait", "NaN", "x"]).is_err());
        assert!(parse(&["--collect", "g", "--idle", "inf"]).is_err());
        let many: Vec<String> = (0..101).map(|i| format!("s3://b/{}", i)).collect();
        let mut args = vec!["--batch"];
        args.extend(many.iter().map(String::as_str));
        assert!(parse(&args).unwrap_err().contains("1 to 100"));
        assert!(parse(&["--collect", "billing"]).is_ok());
    }

    #[test]
    fn batch_timeouts_grow_with_the_batch() {
        let opts = parse(&["--batch", "a", "b", "c"]).unwrap();
        let payload = &payloads(&opts, None)[0];
        assert_eq!(job_timeout(&opts, payload), 90);
        let opts = parse(&["a", "b"]).unwrap();
        let each = payloads(&opts, Some("qrw:reply:x"));
        assert_eq!(each.len(), 2);
        assert_eq!(job_timeout(&opts, &each[0]), 60);
        assert_eq!(each[1].reply_to.as_deref(), Some("qrw:reply:x"));
    }
}
