//! HTTP hooks: one request per attempt, success when the answer is 2xx.
//!
//! The URL, header values and JSON body are templates; values substituted into the URL are
//! percent-encoded, so they cannot add path segments or query parameters. For GET the body's
//! top-level keys become query parameters, as upstream. Header values may name environment
//! variables as `${NAME}` (resolved at plan time, so a missing token is a plan error); header
//! values are never written to reports or logs, only their names, and URLs are recorded
//! without their userinfo and query values ([`crate::manifest::hooks::redact`]). Redirects are
//! not followed: a 3xx is a failure, so a token in a header never travels to a host the manifest
//! did not name.
//! The request runs on a worker thread that the hook only waits for, so cancellation returns at
//! once; the worker ends by itself within the hook's timeout.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::mpsc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::{Attempt, OUTPUT_TAIL_BYTES, Verdict, tail};
use crate::diag::Problems;
use crate::exec::CancelToken;
use crate::manifest::hooks::redact::{self, REDACTED};
use crate::manifest::hooks::template::{Context, JsonTemplate, Template};
use crate::manifest::hooks::{HttpSpec, Method};

/// The most of a response body we read; the report keeps its tail.
const BODY_READ_LIMIT: u64 = 1024 * 1024;
const POLL: Duration = Duration::from_millis(25);

#[derive(Clone, Debug)]
pub struct HttpPlan {
    pub url: Template,
    pub method: Method,
    /// Values with `${NAME}` already resolved: never print them.
    pub headers: Vec<(String, Template)>,
    pub body: Option<JsonTemplate>,
}

/// The request as the report shows it: header values, the URL's userinfo and its query values
/// redacted.
#[derive(Clone, Debug, Serialize)]
pub struct RequestRecord {
    pub method: &'static str,
    pub url: String,
    pub headers: BTreeMap<String, &'static str>,
}

pub fn plan(spec: &HttpSpec, path: &str, problems: &mut Problems) -> Option<HttpPlan> {
    let mut headers = Vec::new();
    let mut ok = true;
    for (name, value) in &spec.headers {
        match value.resolve_env(|n| std::env::var(n).ok()) {
            Ok(t) => headers.push((name.clone(), t)),
            Err(missing) => {
                ok = false;
                for var in missing {
                    problems.push(
                        &format!("{path}.headers.{name}"),
                        format!(
                            "environment variable {var} is not set (header values read ${{NAME}} \
                             from hyper2kvm's environment)"
                        ),
                    );
                }
            }
        }
    }
    ok.then(|| HttpPlan {
        url: spec.url.clone(),
        method: spec.method,
        headers,
        body: spec.body.clone(),
    })
}

fn query_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// One request.
pub fn attempt(plan: &HttpPlan, timeout: Duration, ctx: &Context, cancel: &CancelToken) -> Attempt {
    let rendered = plan.url.render_url(ctx);
    let mut url = match reqwest::Url::parse(&rendered) {
        Ok(u) => u,
        Err(e) => {
            return Attempt::failed(
                Verdict::Broken,
                format!("the URL {} is not valid: {e}", redact::url(&rendered)),
            );
        }
    };
    let body = plan
        .body
        .as_ref()
        .map(|b| b.render(ctx))
        .unwrap_or_else(|| Value::Object(serde_json::Map::new()));
    if plan.method == Method::Get
        && let Value::Object(params) = &body
        && !params.is_empty()
    {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in params {
            pairs.append_pair(k, &query_text(v));
        }
    }
    let record = RequestRecord {
        method: plan.method.name(),
        url: redact::url(url.as_str()),
        headers: plan
            .headers
            .iter()
            .map(|(n, _)| (n.clone(), REDACTED))
            .collect(),
    };
    let broken = |message: String| {
        let mut a = Attempt::failed(Verdict::Broken, message);
        a.request = Some(record.clone());
        a
    };
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in &plan.headers {
        let Ok(header) = reqwest::header::HeaderName::from_bytes(name.as_bytes()) else {
            return broken(format!("'{name}' is not a valid header name"));
        };
        // The value itself stays out of the message: it may hold a token.
        let Ok(mut v) = reqwest::header::HeaderValue::from_str(&value.render(ctx)) else {
            return broken(format!(
                "header {name}: the value after substitution holds characters a header cannot \
                 carry (a newline or control character in a variable?)"
            ));
        };
        v.set_sensitive(true);
        headers.insert(header, v);
    }
    let client = match reqwest::blocking::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("hyper2kvm/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            return broken(format!(
                "cannot set up the HTTP client: {}",
                crate::diag::error_chain(&e)
            ));
        }
    };
    let method = match plan.method {
        Method::Get => reqwest::Method::GET,
        Method::Post => reqwest::Method::POST,
        Method::Put => reqwest::Method::PUT,
        Method::Patch => reqwest::Method::PATCH,
        Method::Delete => reqwest::Method::DELETE,
    };
    let mut request = client.request(method, url).headers(headers);
    if plan.method != Method::Get {
        request = request.json(&body);
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let result = request.send().map(|resp| {
            let status = resp.status();
            let mut bytes = Vec::new();
            // A read error after the status arrived still leaves a status to judge by.
            let _ = resp.take(BODY_READ_LIMIT).read_to_end(&mut bytes);
            (status, bytes)
        });
        let _ = tx.send(result);
        // The client is dropped here, on this thread: its runtime never blocks the caller.
        drop(client);
    });
    let result = loop {
        match rx.recv_timeout(POLL) {
            Ok(r) => break r,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if cancel.is_cancelled() {
                    let mut a = Attempt::failed(
                        Verdict::Cancelled,
                        "cancelled while waiting for the answer",
                    );
                    a.request = Some(record);
                    return a;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return broken("the HTTP worker ended without an answer".to_owned());
            }
        }
    };
    let mut a = match result {
        Ok((status, bytes)) => {
            let text = tail(&String::from_utf8_lossy(&bytes), OUTPUT_TAIL_BYTES);
            let mut a = if status.is_success() {
                Attempt::new(Verdict::Succeeded)
            } else {
                let first = text
                    .trim()
                    .lines()
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(200)
                    .collect::<String>();
                Attempt::failed(
                    Verdict::Failed,
                    if first.is_empty() {
                        format!("answered {status}")
                    } else {
                        format!("answered {status}: {first}")
                    },
                )
            };
            a.http_status = Some(status.as_u16());
            a.body_tail = Some(text);
            a
        }
        Err(e) if e.is_timeout() => Attempt::failed(
            Verdict::TimedOut,
            format!("no answer within {}s", timeout.as_secs_f64()),
        ),
        // reqwest's messages quote the URL, credentials and all; the report has it redacted.
        Err(e) => Attempt::failed(Verdict::Failed, crate::diag::error_chain(&e.without_url())),
    };
    a.request = Some(record);
    a
}
