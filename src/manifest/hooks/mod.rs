//! The `hooks` section of a manifest or profile, parsed and checked into typed [`HookSpec`]s.
//!
//! Parsing collects every problem with its field path (`hooks.pre_convert[0].url`): unknown
//! stages and keys with the nearest valid name, missing `type`/`path`/`module`/`url` (upstream's
//! wording), unknown types, bad timeouts and retry values, non-http(s) URLs, and every template
//! error in every templated string. With the manifest's directory it also checks script files:
//! present, regular, executable, and (as root) not writable by others. Python modules and `${NAME}`
//! environment references are checked when planning (they need python3 and the environment).
//!
//! What the checks need lives beside them: the retry policy ([`retry`]), the templates and their
//! variables ([`template`], parsed here so a typo in `{{ vm_name }}` is found at load time), and
//! the script file checks ([`trust`]). The runner in [`crate::hooks`] plans and runs these specs
//! and uses the same modules.

pub mod redact;
pub mod retry;
pub mod template;
pub mod trust;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::{Map, Value};

use crate::config::{self, kind_of};
use crate::diag::{Problems, suggest};
use crate::spelling::spelled_enum;
use crate::stage::HookStage;
pub use retry::{Backoff, RetryPolicy};
use retry::{MAX_DELAY_SECONDS, MAX_RETRIES};
use template::{JsonTemplate, Syntax, Template, TemplateError, Var};

/// Upstream's default: five minutes.
pub const DEFAULT_TIMEOUT_SECONDS: f64 = 300.0;
/// A week: longer is certainly a typo, and keeps the seconds within what a timer can hold.
pub const MAX_TIMEOUT_SECONDS: f64 = 7.0 * 24.0 * 3600.0;

pub(super) const COMMON_KEYS: &[&str] = &["type", "timeout", "continue_on_error", "retry"];
pub(super) const SCRIPT_KEYS: &[&str] = &["path", "args", "env", "working_directory"];
pub(super) const PYTHON_KEYS: &[&str] = &["module", "function", "args"];
pub(super) const HTTP_KEYS: &[&str] = &["url", "method", "headers", "body"];
pub(super) const RETRY_KEYS: &[&str] = &[
    "max_retries",
    "initial_delay",
    "strategy",
    "max_delay",
    "retry_on_timeout",
];

/// Every hook of a manifest, by stage (kept in pipeline order).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HookSet {
    pub stages: BTreeMap<HookStage, Vec<HookSpec>>,
}

impl HookSet {
    pub fn is_empty(&self) -> bool {
        self.stages.values().all(Vec::is_empty)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HookSpec {
    #[serde(flatten)]
    pub action: Action,
    /// Seconds, per attempt.
    pub timeout: f64,
    pub continue_on_error: bool,
    pub retry: RetryPolicy,
}

spelled_enum! {
    /// A hook's `type`: what kind of code it runs.
    pub enum HookType {
        Script = "script",
        Python = "python",
        Http = "http",
    }
}

/// What a hook does; serialized with its [`HookType`] as `type`, beside the fields of its kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Script(ScriptSpec),
    Python(PythonSpec),
    Http(HttpSpec),
}

impl Action {
    pub fn kind(&self) -> HookType {
        match self {
            Action::Script(_) => HookType::Script,
            Action::Python(_) => HookType::Python,
            Action::Http(_) => HookType::Http,
        }
    }

    pub fn type_name(&self) -> &'static str {
        self.kind().name()
    }
}

impl Serialize for Action {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // The tag comes from HookType, so the name serde writes is the name parsing accepts.
        #[derive(Serialize)]
        struct Tagged<'a, T> {
            #[serde(rename = "type")]
            kind: HookType,
            #[serde(flatten)]
            spec: &'a T,
        }
        let kind = self.kind();
        match self {
            Action::Script(spec) => Tagged { kind, spec }.serialize(s),
            Action::Python(spec) => Tagged { kind, spec }.serialize(s),
            Action::Http(spec) => Tagged { kind, spec }.serialize(s),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScriptSpec {
    /// As written: absolute, or relative to the manifest's directory. Not templated, so the file
    /// that is checked at load time is the file that runs.
    pub path: String,
    pub args: Vec<Template>,
    #[serde(serialize_with = "pairs_as_map")]
    pub env: Vec<(String, Template)>,
    pub working_directory: Option<Template>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PythonSpec {
    pub module: String,
    pub function: String,
    pub args: JsonTemplate,
}

spelled_enum! {
    /// An HTTP hook's `method` (any case in the manifest; written upper-case).
    pub enum Method {
        Get = "GET",
        Post = "POST",
        Put = "PUT",
        Patch = "PATCH",
        Delete = "DELETE",
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HttpSpec {
    pub url: Template,
    pub method: Method,
    #[serde(serialize_with = "pairs_as_map")]
    pub headers: Vec<(String, Template)>,
    pub body: Option<JsonTemplate>,
}

fn pairs_as_map<S: Serializer>(pairs: &[(String, Template)], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(pairs.len()))?;
    for (k, v) in pairs {
        map.serialize_entry(k, v)?;
    }
    map.end()
}

impl Serialize for HookSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.stages.len()))?;
        for (stage, hooks) in &self.stages {
            map.serialize_entry(stage.name(), hooks)?;
        }
        map.end()
    }
}

impl TryFrom<Value> for HookSet {
    type Error = String;

    /// For typing a manifest that already passed [`parse`] with its directory; fails only on a
    /// document that skipped validation.
    fn try_from(value: Value) -> Result<Self, Self::Error> {
        let mut problems = Problems::default();
        let set = parse(Some(&value), None, &mut problems);
        if problems.is_empty() {
            Ok(set)
        } else {
            Err(problems
                .0
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "))
        }
    }
}

impl<'de> serde::Deserialize<'de> for HookSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        HookSet::try_from(value).map_err(serde::de::Error::custom)
    }
}

/// Parses the `hooks` section. With `dir` (the manifest's directory) script files are checked too.
pub fn parse(value: Option<&Value>, dir: Option<&Path>, problems: &mut Problems) -> HookSet {
    let mut set = HookSet::default();
    let map = match value {
        None | Some(Value::Null) => return set,
        Some(Value::Object(map)) => map,
        Some(other) => {
            problems.push(
                "hooks",
                format!(
                    "hooks must be a mapping of hook stage to a list of hooks (got {})",
                    kind_of(other)
                ),
            );
            return set;
        }
    };
    for (key, hooks) in map {
        let path = format!("hooks.{key}");
        let Some(stage) = HookStage::from_name(key) else {
            problems.push(&path, unknown_stage(key));
            continue;
        };
        let items = match hooks {
            Value::Null => continue,
            Value::Array(items) => items,
            other => {
                problems.push(
                    &path,
                    format!(
                        "{path} must be a list of hooks (got {}); write one '- type: ...' item per hook",
                        kind_of(other)
                    ),
                );
                continue;
            }
        };
        let mut specs = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if stage < HookStage::PostFix && names_var(item, Var::FixedPath) {
                problems.push(
                    &format!("{path}[{i}]"),
                    format!(
                        "{{{{ fixed_path }}}} is the repaired boot disk, which exists only from \
                         post_fix on (post_fix, pre_convert, post_convert, post_validate), not in \
                         {key}; use {{{{ source_path }}}} for the disk as it is before the repair"
                    ),
                );
                continue;
            }
            if let Some(spec) = parse_hook(item, &format!("{path}[{i}]"), dir, problems) {
                specs.push(spec);
            }
        }
        set.stages.insert(stage, specs);
    }
    set
}

fn unknown_stage(key: &str) -> String {
    let names = HookStage::NAMES;
    let hint = if key == "pre_validate" {
        " (there is no pre_validate stage: post_convert hooks run right before validate)".to_owned()
    } else {
        suggest(key, names)
            .map(|s| format!(" (did you mean '{s}'?)"))
            .unwrap_or_default()
    };
    format!(
        "unknown hook stage '{key}'{hint}; hook stages: {}",
        names.join(", ")
    )
}

fn parse_hook(
    item: &Value,
    path: &str,
    dir: Option<&Path>,
    problems: &mut Problems,
) -> Option<HookSpec> {
    let Some(obj) = item.as_object() else {
        problems.push(
            path,
            format!(
                "{path} must be a mapping with a 'type' ({}) (got {})",
                or_list(HookType::NAMES),
                kind_of(item)
            ),
        );
        return None;
    };
    let kind = match obj.get("type") {
        None | Some(Value::Null) => {
            problems.push(
                path,
                format!(
                    "Hook configuration must have 'type' field ({})",
                    or_list(HookType::NAMES)
                ),
            );
            return None;
        }
        Some(Value::String(t)) => {
            let lower = t.to_ascii_lowercase();
            let Some(kind) = HookType::from_name(&lower) else {
                let hint = suggest(&lower, HookType::NAMES)
                    .map(|s| format!(" (did you mean '{s}'?)"))
                    .unwrap_or_default();
                problems.push(
                    &format!("{path}.type"),
                    format!(
                        "{path}.type: Unknown hook type: {t}. Supported types: {}{hint}",
                        HookType::NAMES.join(", ")
                    ),
                );
                return None;
            };
            kind
        }
        Some(other) => {
            problems.push(
                &format!("{path}.type"),
                format!(
                    "{path}.type must be one of: {} (got {}: {})",
                    HookType::NAMES.join(", "),
                    kind_of(other),
                    crate::diag::excerpt_value(other)
                ),
            );
            return None;
        }
    };
    let own_keys = match kind {
        HookType::Script => SCRIPT_KEYS,
        HookType::Python => PYTHON_KEYS,
        HookType::Http => HTTP_KEYS,
    };
    let before = problems.0.len();
    for key in obj.keys() {
        if !COMMON_KEYS.contains(&key.as_str()) && !own_keys.contains(&key.as_str()) {
            let known: Vec<&str> = COMMON_KEYS.iter().chain(own_keys).copied().collect();
            problems.push(
                &format!("{path}.{key}"),
                crate::diag::unknown_key(key, &known, Some(&format!("a {kind} hook"))),
            );
        }
    }
    let timeout = match obj.get("timeout") {
        None | Some(Value::Null) => DEFAULT_TIMEOUT_SECONDS,
        Some(v) => match v.as_f64() {
            Some(t) if t > 0.0 && t <= MAX_TIMEOUT_SECONDS => t,
            _ => {
                problems.push(
                    &format!("{path}.timeout"),
                    format!(
                        "{path}.timeout must be a number of seconds greater than 0 and at most \
                         {MAX_TIMEOUT_SECONDS} (got {}: {})",
                        kind_of(v),
                        crate::diag::excerpt_value(v)
                    ),
                );
                DEFAULT_TIMEOUT_SECONDS
            }
        },
    };
    let continue_on_error = match obj.get("continue_on_error") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            problems.push(
                &format!("{path}.continue_on_error"),
                format!(
                    "{path}.continue_on_error must be a boolean (true or false) (got {}: {})",
                    kind_of(v),
                    crate::diag::excerpt_value(v)
                ),
            );
            false
        }
    };
    let retry = parse_retry(obj.get("retry"), &format!("{path}.retry"), problems);
    let action = match kind {
        HookType::Script => parse_script(obj, path, dir, problems).map(Action::Script),
        HookType::Python => parse_python(obj, path, problems).map(Action::Python),
        HookType::Http => parse_http(obj, path, problems).map(Action::Http),
    };
    if problems.0.len() > before {
        return None;
    }
    Some(HookSpec {
        action: action?,
        timeout,
        continue_on_error,
        retry,
    })
}

fn parse_retry(value: Option<&Value>, path: &str, problems: &mut Problems) -> RetryPolicy {
    let mut policy = RetryPolicy::default();
    let obj = match value {
        None | Some(Value::Null) => return policy,
        Some(Value::Object(obj)) => obj,
        Some(other) => {
            problems.push(
                path,
                format!(
                    "{path} must be a mapping (got {}: {})",
                    kind_of(other),
                    crate::diag::excerpt_value(other)
                ),
            );
            return policy;
        }
    };
    for (key, v) in obj {
        let here = format!("{path}.{key}");
        let number = |problems: &mut Problems, max: f64| match v.as_f64() {
            Some(n) if (0.0..=max).contains(&n) => Some(n),
            _ => {
                problems.push(
                    &here,
                    format!(
                        "{here} must be a number of seconds from 0 to {max} (got {}: {})",
                        kind_of(v),
                        crate::diag::excerpt_value(v)
                    ),
                );
                None
            }
        };
        match key.as_str() {
            "max_retries" => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) if n <= MAX_RETRIES => policy.max_retries = n,
                _ => problems.push(
                    &here,
                    format!(
                        "{here} must be an integer from 0 to {MAX_RETRIES} (got {}: {})",
                        kind_of(v),
                        crate::diag::excerpt_value(v)
                    ),
                ),
            },
            "initial_delay" => {
                if let Some(n) = number(problems, MAX_DELAY_SECONDS) {
                    policy.initial_delay = n;
                }
            }
            "max_delay" => {
                if let Some(n) = number(problems, MAX_DELAY_SECONDS) {
                    policy.max_delay = n;
                }
            }
            "strategy" => match v
                .as_str()
                .map(str::to_ascii_lowercase)
                .as_deref()
                .and_then(Backoff::from_name)
            {
                Some(b) => policy.strategy = b,
                None => {
                    let hint = v
                        .as_str()
                        .and_then(|s| suggest(&s.to_ascii_lowercase(), Backoff::NAMES))
                        .map(|s| format!(" (did you mean '{s}'?)"))
                        .unwrap_or_default();
                    problems.push(
                        &here,
                        format!(
                            "{here} must be one of: {} (got {}){hint}",
                            Backoff::NAMES.join(", "),
                            crate::diag::excerpt_value(v)
                        ),
                    );
                }
            },
            "retry_on_timeout" => match v.as_bool() {
                Some(b) => policy.retry_on_timeout = b,
                None => problems.push(
                    &here,
                    format!(
                        "{here} must be a boolean (true or false) (got {}: {})",
                        kind_of(v),
                        crate::diag::excerpt_value(v)
                    ),
                ),
            },
            _ => {
                problems.push(
                    &here,
                    crate::diag::unknown_key(key, RETRY_KEYS, Some("retry")),
                );
            }
        }
    }
    policy
}

/// `a, b or c`: upstream's wording for the hook types.
fn or_list(names: &[&str]) -> String {
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.join(", "),
    }
}

/// Whether any string in a hook's settings names `var` (strings that do not parse as templates
/// are reported where they are parsed).
fn names_var(item: &Value, var: Var) -> bool {
    match item {
        Value::String(s) => {
            Template::parse(s, Syntax::VarsAndEnv).is_ok_and(|t| t.vars().any(|v| v == var))
        }
        Value::Array(items) => items.iter().any(|v| names_var(v, var)),
        Value::Object(map) => map.values().any(|v| names_var(v, var)),
        _ => false,
    }
}

/// Adds each template error as a problem at `path`.
fn template(text: &str, syntax: Syntax, path: &str, problems: &mut Problems) -> Option<Template> {
    match Template::parse(text, syntax) {
        Ok(t) => Some(t),
        Err(errors) => {
            push_template_errors(path, &errors, problems);
            None
        }
    }
}

fn push_template_errors(path: &str, errors: &[TemplateError], problems: &mut Problems) {
    for e in errors {
        problems.push(path, e.to_string());
    }
}

/// Upstream stringifies scalar arguments; lists, mappings and null are mistakes.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn required_string<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
    missing: &str,
    problems: &mut Problems,
) -> Option<&'a str> {
    match obj.get(key) {
        None | Some(Value::Null) => {
            problems.push(path, missing.to_owned());
            None
        }
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s),
        Some(v) => {
            problems.push(
                &format!("{path}.{key}"),
                format!(
                    "{path}.{key} must be a non-empty string (got {}: {})",
                    kind_of(v),
                    crate::diag::excerpt_value(v)
                ),
            );
            None
        }
    }
}

fn parse_script(
    obj: &Map<String, Value>,
    path: &str,
    dir: Option<&Path>,
    problems: &mut Problems,
) -> Option<ScriptSpec> {
    let script = required_string(
        obj,
        "path",
        path,
        "Script hook requires 'path' field",
        problems,
    );
    if let (Some(script), Some(dir)) = (script, dir)
        && let Err(message) = trust::check_script(&config::resolve_relative(dir, script))
    {
        problems.push(&format!("{path}.path"), message);
    }
    let mut args = Vec::new();
    match obj.get("args") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let here = format!("{path}.args[{i}]");
                match scalar_text(item) {
                    Some(text) => args.extend(template(&text, Syntax::Vars, &here, problems)),
                    None => problems.push(
                        &here,
                        format!(
                            "{here} must be a string, number or boolean (got {}: {})",
                            kind_of(item),
                            crate::diag::excerpt_value(item)
                        ),
                    ),
                }
            }
        }
        Some(v) => problems.push(
            &format!("{path}.args"),
            format!(
                "{path}.args must be a list of arguments (got {}: {})",
                kind_of(v),
                crate::diag::excerpt_value(v)
            ),
        ),
    }
    let mut env = Vec::new();
    match obj.get("env") {
        None | Some(Value::Null) => {}
        Some(Value::Object(vars)) => {
            for (name, v) in vars {
                let here = format!("{path}.env.{name}");
                if name.is_empty() || name.contains(['=', '\0']) {
                    problems.push(
                        &here,
                        format!("{here}: '{name}' is not a valid environment variable name"),
                    );
                    continue;
                }
                match scalar_text(v) {
                    Some(text) => {
                        if let Some(t) = template(&text, Syntax::Vars, &here, problems) {
                            env.push((name.clone(), t));
                        }
                    }
                    None => problems.push(
                        &here,
                        format!(
                            "{here} must be a string, number or boolean (got {}: {})",
                            kind_of(v),
                            crate::diag::excerpt_value(v)
                        ),
                    ),
                }
            }
        }
        Some(v) => problems.push(
            &format!("{path}.env"),
            format!(
                "{path}.env must be a mapping of variable names to values (got {}: {})",
                kind_of(v),
                crate::diag::excerpt_value(v)
            ),
        ),
    }
    let working_directory = match obj.get("working_directory") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            let here = format!("{path}.working_directory");
            let t = template(s, Syntax::Vars, &here, problems);
            // A fixed directory can be checked now; a templated one when the hook runs.
            if let (Some(t), Some(dir)) = (&t, dir)
                && t.is_literal()
            {
                let wd = config::resolve_relative(dir, s);
                if !wd.is_dir() {
                    problems.push(
                        &here,
                        format!("{here}: working directory {} does not exist", wd.display()),
                    );
                }
            }
            t
        }
        Some(v) => {
            problems.push(
                &format!("{path}.working_directory"),
                format!(
                    "{path}.working_directory must be a string path (got {}: {})",
                    kind_of(v),
                    crate::diag::excerpt_value(v)
                ),
            );
            None
        }
    };
    Some(ScriptSpec {
        path: script?.to_owned(),
        args,
        env,
        working_directory,
    })
}

fn is_module_name(s: &str) -> bool {
    s.split('.').all(is_python_identifier)
}

fn is_python_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_python(
    obj: &Map<String, Value>,
    path: &str,
    problems: &mut Problems,
) -> Option<PythonSpec> {
    let missing = "Python hook requires 'module' and 'function' fields";
    let module = required_string(obj, "module", path, missing, problems);
    let function = if obj.get("module").is_none_or(Value::is_null) {
        // One message for both, as upstream.
        match obj.get("function") {
            Some(Value::String(f)) => Some(f.as_str()),
            _ => None,
        }
    } else {
        required_string(obj, "function", path, missing, problems)
    };
    if let Some(m) = module
        && !is_module_name(m)
    {
        problems.push(
            &format!("{path}.module"),
            format!(
                "{path}.module must be an importable module name like 'site_hooks' or \
                 'site_hooks.cmdb' (got '{m}'); put the file beside the manifest or on PYTHONPATH"
            ),
        );
    }
    if let Some(f) = function
        && !is_python_identifier(f)
    {
        problems.push(
            &format!("{path}.function"),
            format!("{path}.function must be a Python function name (got '{f}')"),
        );
    }
    let args = match obj.get("args") {
        None | Some(Value::Null) => JsonTemplate::Object(Vec::new()),
        Some(v @ Value::Object(_)) => match JsonTemplate::parse(v, &format!("{path}.args")) {
            Ok(t) => t,
            Err(errors) => {
                for (p, e) in errors {
                    problems.push(&p, e.to_string());
                }
                JsonTemplate::Object(Vec::new())
            }
        },
        Some(v) => {
            problems.push(
                &format!("{path}.args"),
                format!(
                    "{path}.args must be a mapping of keyword arguments (got {}: {})",
                    kind_of(v),
                    crate::diag::excerpt_value(v)
                ),
            );
            JsonTemplate::Object(Vec::new())
        }
    };
    Some(PythonSpec {
        module: module?.to_owned(),
        function: function?.to_owned(),
        args,
    })
}

fn parse_http(obj: &Map<String, Value>, path: &str, problems: &mut Problems) -> Option<HttpSpec> {
    let url_text = required_string(obj, "url", path, "HTTP hook requires 'url' field", problems);
    let url_path = format!("{path}.url");
    let url = url_text.and_then(|u| {
        let lower = u.trim_start().to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            problems.push(
                &url_path,
                format!(
                    "{url_path} must be an http:// or https:// URL (got '{}')",
                    redact::url(u)
                ),
            );
            return None;
        }
        let t = template(u, Syntax::Vars, &url_path, problems)?;
        // Every variable as a plain word: what remains must already be a valid URL.
        let mut sample = template::Context::default();
        for &v in template::Var::ALL {
            sample.set(v, "x");
        }
        if let Err(e) = reqwest::Url::parse(&t.render_url(&sample)) {
            problems.push(
                &url_path,
                format!(
                    "{url_path} is not a valid URL: {e} (got '{}')",
                    redact::url(u)
                ),
            );
            return None;
        }
        Some(t)
    });
    let method = match obj.get("method") {
        None | Some(Value::Null) => Method::Post,
        Some(Value::String(m)) => match Method::from_name(&m.to_ascii_uppercase()) {
            Some(method) => method,
            None => {
                let hint = suggest(&m.to_ascii_uppercase(), Method::NAMES)
                    .map(|s| format!(" (did you mean '{s}'?)"))
                    .unwrap_or_default();
                problems.push(
                    &format!("{path}.method"),
                    format!(
                        "{path}.method must be one of: {} (got '{m}'){hint}",
                        Method::NAMES.join(", ")
                    ),
                );
                Method::Post
            }
        },
        Some(v) => {
            problems.push(
                &format!("{path}.method"),
                format!(
                    "{path}.method must be one of: {} (got {}: {})",
                    Method::NAMES.join(", "),
                    kind_of(v),
                    crate::diag::excerpt_value(v)
                ),
            );
            Method::Post
        }
    };
    let mut headers = Vec::new();
    match obj.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (name, v) in map {
                let here = format!("{path}.headers.{name}");
                if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    problems.push(
                        &here,
                        format!("{here}: '{name}' is not a valid HTTP header name"),
                    );
                    continue;
                }
                match scalar_text(v) {
                    Some(text) => {
                        if let Some(t) = template(&text, Syntax::VarsAndEnv, &here, problems) {
                            headers.push((name.clone(), t));
                        }
                    }
                    None => problems.push(
                        &here,
                        format!(
                            "{here} must be a string (got {}: {})",
                            kind_of(v),
                            crate::diag::excerpt_value(v)
                        ),
                    ),
                }
            }
        }
        Some(v) => problems.push(
            &format!("{path}.headers"),
            format!(
                "{path}.headers must be a mapping of header names to values (got {}: {})",
                kind_of(v),
                crate::diag::excerpt_value(v)
            ),
        ),
    }
    let body = match obj.get("body") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => match JsonTemplate::parse(v, &format!("{path}.body")) {
            Ok(t) => Some(t),
            Err(errors) => {
                for (p, e) in errors {
                    problems.push(&p, e.to_string());
                }
                None
            }
        },
        Some(v) => {
            problems.push(
                &format!("{path}.body"),
                format!(
                    "{path}.body must be a mapping (sent as JSON, or as the query string for GET) (got {}: {})",
                    kind_of(v), crate::diag::excerpt_value(v)
                ),
            );
            None
        }
    };
    Some(HttpSpec {
        url: url?,
        method,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems_of(v: Value) -> Vec<String> {
        let mut problems = Problems::default();
        parse(Some(&v), None, &mut problems);
        problems.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn defaults_are_upstreams() {
        let mut problems = Problems::default();
        let set = parse(
            Some(&json!({"post_convert": [{"type": "HTTP", "url": "https://cmdb.example/hook"}]})),
            None,
            &mut problems,
        );
        assert!(problems.is_empty(), "{problems:?}");
        let hook = &set.stages[&HookStage::PostConvert][0];
        assert_eq!(hook.timeout, 300.0);
        assert!(!hook.continue_on_error);
        assert_eq!(hook.retry, RetryPolicy::default());
        let Action::Http(http) = &hook.action else {
            panic!("http")
        };
        assert_eq!(http.method, Method::Post);
    }

    #[test]
    fn unknown_stage_suggests() {
        assert_eq!(
            problems_of(json!({"prefix": []})),
            [
                "hooks.prefix: unknown hook stage 'prefix' (did you mean 'pre_fix'?); hook stages: \
              pre_extraction, post_extraction, pre_fix, post_fix, pre_convert, post_convert, post_validate"
            ]
        );
    }

    #[test]
    fn upstream_factory_messages() {
        let got = problems_of(json!({"pre_fix": [
            {"path": "/bin/true"},
            {"type": "script"},
            {"type": "python", "function": "f"},
            {"type": "http"},
            {"type": "scirpt", "path": "/bin/true"},
        ]}));
        assert_eq!(
            got,
            [
                "hooks.pre_fix[0]: Hook configuration must have 'type' field (script, python or http)",
                "hooks.pre_fix[1]: Script hook requires 'path' field",
                "hooks.pre_fix[2]: Python hook requires 'module' and 'function' fields",
                "hooks.pre_fix[3]: HTTP hook requires 'url' field",
                "hooks.pre_fix[4].type: Unknown hook type: scirpt. Supported types: script, python, http (did you mean 'script'?)",
            ]
        );
    }

    #[test]
    fn timeouts_must_be_positive() {
        let got = problems_of(json!({"pre_fix": [
            {"type": "script", "path": "/bin/true", "timeout": 0},
            {"type": "script", "path": "/bin/true", "timeout": -5},
            {"type": "script", "path": "/bin/true", "timeout": "10"},
        ]}));
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(
            got[0]
                .starts_with("hooks.pre_fix[0].timeout must be a number of seconds greater than 0")
        );
    }

    #[test]
    fn non_http_scheme_is_rejected() {
        let got = problems_of(
            json!({"post_convert": [{"type": "http", "url": "ftp://h/x"},
            {"type": "http", "url": "file:///etc/passwd"}, {"type": "http", "url": "{{ vm_name }}"}]}),
        );
        assert_eq!(
            got[0],
            "hooks.post_convert[0].url must be an http:// or https:// URL (got 'ftp://h/x')"
        );
        assert_eq!(got.len(), 3, "{got:?}");
    }

    #[test]
    fn every_template_error_with_its_path() {
        let mut problems = Problems::default();
        parse(
            Some(&json!({"post_convert": [
                {"type": "script", "path": "/bin/true", "args": ["{{ vmname }}", 3, ["x"]], "env": {"A": "{{ nope }}"}},
                {"type": "http", "url": "https://h/{{ stage }}", "headers": {"X-A": "{{ bad }}"}, "body": {"a": {"b": "{{ worse }}"}}},
            ]})),
            None,
            &mut problems,
        );
        let paths: Vec<&str> = problems.0.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "hooks.post_convert[0].args[0]",
                "hooks.post_convert[0].args[2]",
                "hooks.post_convert[0].env.A",
                "hooks.post_convert[1].headers.X-A",
                "hooks.post_convert[1].body.a.b",
            ]
        );
    }

    #[test]
    fn retry_values_are_checked() {
        let got = problems_of(
            json!({"post_convert": [{"type": "http", "url": "https://h/",
            "retry": {"max_retries": -1, "initial_delay": "1", "strategy": "exponentail", "max_dealy": 3}}]}),
        );
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got[2].contains("(did you mean 'exponential'?)"), "{got:?}");
        assert!(got[3].contains("(did you mean 'max_delay'?)"), "{got:?}");
    }

    #[test]
    fn keys_of_another_type_are_unknown() {
        let got = problems_of(
            json!({"post_convert": [{"type": "script", "path": "/bin/true", "url": "https://h/"}]}),
        );
        assert_eq!(got.len(), 1);
        assert!(
            got[0].starts_with("hooks.post_convert[0].url: unknown key 'url' for a script hook"),
            "{got:?}"
        );
    }

    #[test]
    fn null_stage_means_none() {
        let mut problems = Problems::default();
        let set = parse(Some(&json!({"pre_fix": null})), None, &mut problems);
        assert!(problems.is_empty());
        assert!(set.is_empty());
    }

    #[test]
    fn serializes_with_defaults() {
        let set = HookSet::try_from(
            json!({"pre_convert": [{"type": "script", "path": "b.sh", "args": ["{{ vm_name }}"]}]}),
        )
        .expect("valid");
        let v = serde_json::to_value(&set).expect("json");
        assert_eq!(
            v,
            json!({"pre_convert": [{"type": "script", "path": "b.sh", "args": ["{{ vm_name }}"], "env": {},
                "working_directory": null, "timeout": 300.0, "continue_on_error": false,
                "retry": {"max_retries": 0, "initial_delay": 1.0, "strategy": "exponential",
                          "max_delay": 60.0, "retry_on_timeout": true}}]})
        );
    }
}
