//! Configuration: one typed [`Settings`], built in layers and validated before anything starts.
//!
//! Layers, later ones winning: built-in defaults → the TOML file (`--config FILE`, or
//! `tandem.toml` in the working directory when it exists) → `TANDEM_*` environment variables →
//! command-line flags. Secrets are read only from the environment (`TANDEM_APP_SECRET`, …) or
//! from files named in the config (`meta.app_secret_file`, …) or the environment
//! (`TANDEM_APP_SECRET_FILE`, …); a secret written into the TOML file is refused. Every error
//! names the key and what is wrong with it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tandem_engine::EngineConfig;
use tandem_store::StoreOptions;

/// A configuration problem: which key, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// The offending key (`meta.app_secret`), environment variable or file.
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Values given on the command line; they win over every other layer.
#[derive(Debug, Clone, Default)]
pub struct CliOverrides {
    /// `--config FILE`.
    pub config: Option<PathBuf>,
    /// `--listen ADDR`.
    pub listen: Option<String>,
    /// `--store PATH-or-URL`.
    pub store: Option<String>,
    /// `--dev`: run without Meta credentials and without signature checks.
    pub dev: bool,
    /// `--flows DIR`.
    pub flows: Option<PathBuf>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// The validated configuration of a Tandem server.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address of the HTTP listener (webhook, API, health, metrics).
    pub listen: SocketAddr,
    /// Largest webhook body accepted, in bytes.
    pub max_body_bytes: usize,
    /// How long shutdown waits for in-flight work.
    pub shutdown_grace: Duration,
    /// Header, idle and request timeouts of every connection.
    pub connection_limits: crate::serve::ConnectionLimits,
    /// Log line format.
    pub log_format: LogFormat,
    /// Store path or `redis://` URL.
    pub store_url: String,
    /// Store options.
    pub store: StoreOptions,
    /// Engine options.
    pub engine: EngineConfig,
    /// Meta app secret; checks `X-Hub-Signature-256`. `None` only in dev mode.
    pub app_secret: Option<SecretString>,
    /// Token Meta echoes in the subscription handshake. `None` only in dev mode.
    pub verify_token: Option<SecretString>,
    /// Cloud API access token (used for sending).
    pub access_token: Option<SecretString>,
    /// Base URL of the Graph API.
    pub graph_url: String,
    /// The Meta app's id (`meta.app_id`, `TANDEM_APP_ID`): exchanges Embedded Signup codes.
    pub app_id: Option<String>,
    /// Bearer tokens of the `/v1` agent API; none only in dev mode (open).
    pub api_tokens: Vec<ApiToken>,
    /// Requests a second each API token may make (a burst of as many); 0 turns the limit
    /// off (`api.rate_limit`, `TANDEM_API_RATE_LIMIT`).
    pub api_rate_limit: u32,
    /// Teams, agents and routing rules (`[handoff]`).
    pub routing: tandem_handoff::Routing,
    /// Handoff hook receivers (`[[hooks]]` and `TANDEM_HOOK_URL`).
    pub hooks: Vec<tandem_handoff::HookTarget>,
    /// Coexistence link health (`[health]`).
    pub health: tandem_engine::health::HealthConfig,
    /// Dev mode: signatures are not checked.
    pub dev: bool,
    /// The flows directory; `None` runs without a bot (events are recorded, nobody answers).
    pub flows_dir: Option<PathBuf>,
    /// Values for the flows' `config.*` variables, from `TANDEM_FLOW_<NAME>` (name lower-cased).
    pub flow_variables: std::collections::BTreeMap<String, String>,
    /// Timeout of each Graph API request.
    pub send_timeout: Duration,
    /// The LLM stage of the classifier, when `TANDEM_LLM_BASE_URL` and `TANDEM_LLM_MODEL`
    /// are set.
    pub llm: Option<LlmSettings>,
    /// The semantic stage of the classifier, when `TANDEM_EMBEDDER` is set.
    pub embedder: Option<EmbedderSettings>,
    /// Voice notes transcribed, when `TANDEM_TRANSCRIBER` is set.
    pub transcriber: Option<TranscriberSettings>,
    /// Where the prompt templates are (`classify.j2`).
    pub prompts_dir: PathBuf,
    /// The directory of declared tenants (`tenants.dir`, `TANDEM_TENANTS`): one
    /// subdirectory per tenant. `None`: one implicit tenant owns every number.
    pub tenants_dir: Option<PathBuf>,
    /// Create a tenant from `<tenants_dir>/_template` when Embedded Signup shares a new WABA
    /// (`account_update` `PARTNER_ADDED`; `tenants.auto_create`, `TANDEM_TENANTS_AUTO_CREATE`).
    pub tenants_auto_create: bool,
}

/// How to reach the LLM.
#[derive(Debug, Clone)]
pub struct LlmSettings {
    /// Base URL of an OpenAI-compatible API (`…/v1`).
    pub base_url: String,
    /// The model.
    pub model: String,
    /// The API key (`TANDEM_LLM_API_KEY` or `_FILE`), empty when the server needs none.
    pub api_key: Option<SecretString>,
    /// Timeout of one call.
    pub timeout: Duration,
    /// Ask for `json_schema` structured output (`false`: JSON mode, for servers without it).
    pub structured_output: bool,
    /// Calls at once (`TANDEM_LLM_CONCURRENCY`, default 8; 1 for a server that answers one
    /// request at a time, such as llama.cpp's, so queued calls do not time out).
    pub concurrency: usize,
}

/// Where the semantic stage's sentence embeddings come from.
#[derive(Debug, Clone, PartialEq)]
pub enum EmbedderSource {
    /// A sentence-transformers model folder, run in this process (feature `semantic`).
    Local(PathBuf),
    /// An OpenAI-compatible `/v1/embeddings` endpoint.
    Endpoint {
        /// Base URL (`…/v1`).
        base_url: String,
        /// The model name.
        model: String,
    },
}

/// The semantic stage's settings (`TANDEM_EMBEDDER*`, `TANDEM_SEMANTIC_*`).
#[derive(Debug, Clone)]
pub struct EmbedderSettings {
    /// The model folder or the endpoint.
    pub source: EmbedderSource,
    /// The endpoint's API key (`TANDEM_EMBEDDER_API_KEY` or `_FILE`).
    pub api_key: Option<SecretString>,
    /// Longest wait for one message's vector (`TANDEM_EMBEDDER_TIMEOUT`, default 1 s).
    pub timeout: Duration,
    /// Put before every text (`TANDEM_EMBEDDER_PREFIX`; `query: ` for multilingual-e5).
    pub prefix: String,
    /// The stage's decision settings.
    pub options: tandem_classify::semantic::SemanticOptions,
}

/// Reads `TANDEM_EMBEDDER` and its companions; `None` when it is not set.
fn embedder_settings(
    env: &HashMap<String, String>,
) -> Result<Option<EmbedderSettings>, ConfigError> {
    let Some(raw) = env.get("TANDEM_EMBEDDER").filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let source = if raw.starts_with("http://") || raw.starts_with("https://") {
        let model = env
            .get("TANDEM_EMBEDDER_MODEL")
            .filter(|m| !m.is_empty())
            .ok_or_else(|| {
                ConfigError::new(
                    "TANDEM_EMBEDDER_MODEL",
                    "missing: an embeddings endpoint needs the model's name",
                )
            })?;
        EmbedderSource::Endpoint {
            base_url: raw.clone(),
            model: model.clone(),
        }
    } else {
        let dir = PathBuf::from(raw);
        for file in ["config.json", "tokenizer.json", "model.safetensors"] {
            if !dir.join(file).is_file() {
                return Err(ConfigError::new(
                    "TANDEM_EMBEDDER",
                    format!(
                        "{} has no {file}: give a sentence-transformers model folder or an http(s) embeddings URL",
                        dir.display()
                    ),
                ));
            }
        }
        EmbedderSource::Local(dir)
    };
    let mut timeout = Duration::from_secs(1);
    env_duration(env, "TANDEM_EMBEDDER_TIMEOUT", &mut timeout)?;
    let mut options = tandem_classify::semantic::SemanticOptions::default();
    for (name, target) in [
        ("TANDEM_SEMANTIC_THRESHOLD", &mut options.threshold),
        (
            "TANDEM_SEMANTIC_LEXICAL_THRESHOLD",
            &mut options.lexical_threshold,
        ),
    ] {
        if let Some(raw) = env.get(name) {
            *target = raw
                .parse::<f32>()
                .ok()
                .filter(|v| (0.0..=1.0).contains(v))
                .ok_or_else(|| {
                    ConfigError::new(name, format!("{raw:?} is not a number from 0 to 1"))
                })?;
        }
    }
    Ok(Some(EmbedderSettings {
        source,
        api_key: secret(env, "TANDEM_EMBEDDER_API_KEY", "embedder.api_key", None)?,
        timeout,
        prefix: env
            .get("TANDEM_EMBEDDER_PREFIX")
            .cloned()
            .unwrap_or_default(),
        options,
    }))
}

/// How to reach the transcription endpoint (`TANDEM_TRANSCRIBER*`).
#[derive(Debug, Clone)]
pub struct TranscriberSettings {
    /// Base URL of an OpenAI-compatible API (`…/v1`).
    pub base_url: String,
    /// The model (`TANDEM_TRANSCRIBER_MODEL`, default `whisper-1`).
    pub model: String,
    /// The API key (`TANDEM_TRANSCRIBER_API_KEY` or `_FILE`).
    pub api_key: Option<SecretString>,
    /// Longest wait for one voice note (`TANDEM_TRANSCRIBER_TIMEOUT`, default 20 s).
    pub timeout: Duration,
    /// The customers' language as an ISO-639-1 code (`TANDEM_TRANSCRIBER_LANGUAGE`; unset:
    /// the server detects it).
    pub language: Option<String>,
}

/// Reads `TANDEM_TRANSCRIBER` and its companions; `None` when it is not set.
fn transcriber_settings(
    env: &HashMap<String, String>,
) -> Result<Option<TranscriberSettings>, ConfigError> {
    let Some(base_url) = env.get("TANDEM_TRANSCRIBER").filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
        return Err(ConfigError::new(
            "TANDEM_TRANSCRIBER",
            format!("{base_url:?} is not an http(s) URL of an OpenAI-compatible API (…/v1)"),
        ));
    }
    let mut timeout = Duration::from_secs(20);
    env_duration(env, "TANDEM_TRANSCRIBER_TIMEOUT", &mut timeout)?;
    let language = match env
        .get("TANDEM_TRANSCRIBER_LANGUAGE")
        .filter(|v| !v.is_empty())
    {
        Some(code)
            if (2..=3).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_lowercase()) =>
        {
            Some(code.clone())
        }
        Some(code) => {
            return Err(ConfigError::new(
                "TANDEM_TRANSCRIBER_LANGUAGE",
                format!("{code:?} is not an ISO-639-1 language code such as `pt`"),
            ));
        }
        None => None,
    };
    Ok(Some(TranscriberSettings {
        base_url: base_url.clone(),
        model: env
            .get("TANDEM_TRANSCRIBER_MODEL")
            .filter(|m| !m.is_empty())
            .cloned()
            .unwrap_or_else(|| "whisper-1".to_owned()),
        api_key: secret(
            env,
            "TANDEM_TRANSCRIBER_API_KEY",
            "transcriber.api_key",
            None,
        )?,
        timeout,
        language,
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    store: StoreSection,
    #[serde(default)]
    engine: EngineConfig,
    #[serde(default)]
    meta: MetaSection,
    #[serde(default)]
    api: ApiSection,
    #[serde(default)]
    flows: FlowsSection,
    #[serde(default)]
    handoff: tandem_handoff::RoutingConfig,
    #[serde(default)]
    hooks: Vec<HookSection>,
    #[serde(default)]
    health: HealthSection,
    #[serde(default)]
    retention: RetentionSection,
    #[serde(default)]
    tenants: TenantsSection,
}

/// `[tenants]`: where declared tenants live.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantsSection {
    dir: Option<PathBuf>,
    #[serde(default)]
    auto_create: bool,
}

/// `[retention]`: how long customers' data is kept. Off unless a period is set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RetentionSection {
    #[serde(with = "humantime_serde")]
    transcripts: Option<Duration>,
    #[serde(with = "humantime_serde")]
    audit: Option<Duration>,
    #[serde(with = "humantime_serde")]
    every: Duration,
    batch: usize,
}

impl Default for RetentionSection {
    fn default() -> Self {
        let d = tandem_engine::privacy::Retention::default();
        Self {
            transcripts: d.transcripts,
            audit: d.audit,
            every: d.every,
            batch: d.batch,
        }
    }
}

/// `[health]`: Coexistence link health.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct HealthSection {
    #[serde(with = "humantime_serde")]
    heartbeat: Duration,
    #[serde(with = "humantime_serde")]
    tick: Duration,
    reminder_to: Option<String>,
    reminder_template: Option<String>,
    reminder_language: String,
}

impl Default for HealthSection {
    fn default() -> Self {
        let d = tandem_engine::health::HealthConfig::default();
        Self {
            heartbeat: d.heartbeat,
            tick: d.tick,
            reminder_to: None,
            reminder_template: None,
            reminder_language: "en".into(),
        }
    }
}

/// `[[hooks]]`: one receiver of handoff hooks.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HookSection {
    name: String,
    url: String,
    /// The environment variable holding the signing secret.
    secret_env: Option<String>,
    /// A file holding the signing secret.
    secret_file: Option<PathBuf>,
    #[serde(default)]
    teams: Vec<String>,
    #[serde(default)]
    events: Vec<String>,
    // Present only to refuse it with a helpful message.
    secret: Option<toml::Value>,
}

impl HookSection {
    /// Reads a relative `secret_file` from `dir`.
    pub(crate) fn rebase(&mut self, dir: &Path) {
        if let Some(file) = &mut self.secret_file {
            *file = dir.join(&*file);
        }
    }
}

impl TokenSection {
    /// Reads a relative `token_file` from `dir`, and limits the token to `tenant`.
    pub(crate) fn rebase(&mut self, dir: &Path, tenant: &str) {
        if let Some(file) = &mut self.token_file {
            *file = dir.join(&*file);
        }
        self.tenants = Some(vec![tenant.to_owned()]);
    }
}

/// `[[api.tokens]]`: a bearer token of the agent API with its scopes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenSection {
    name: String,
    token_env: Option<String>,
    token_file: Option<PathBuf>,
    scopes: Vec<String>,
    agent: Option<String>,
    /// The tenants the token is limited to (absent: every tenant).
    tenants: Option<Vec<String>>,
    token: Option<toml::Value>,
}

/// What a bearer token of the agent API may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Read conversations, the queue, agents, dead letters.
    Read,
    /// Act on conversations: take over, assign, release, close, send; set availability.
    Agent,
    /// Operate the hook outbox: list and re-drive dead deliveries.
    Admin,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Agent, Scope::Admin];

    /// The scope's name as configured.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Agent => "agent",
            Self::Admin => "admin",
        }
    }
}

/// A bearer token of the agent API.
#[derive(Debug, Clone)]
pub struct ApiToken {
    /// A name for logs.
    pub name: String,
    /// The token.
    pub token: SecretString,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// The agent it acts as, when it is one agent's token.
    pub agent: Option<String>,
    /// The tenants it may see and act on; `None`: every tenant (a deployment's token).
    pub tenants: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FlowsSection {
    pub(crate) dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ServerSection {
    listen: String,
    max_body_bytes: usize,
    #[serde(with = "humantime_serde")]
    shutdown_grace: Duration,
    log_format: LogFormat,
    #[serde(with = "humantime_serde")]
    header_timeout: Duration,
    #[serde(with = "humantime_serde")]
    request_timeout: Duration,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 16 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
            log_format: LogFormat::Pretty,
            header_timeout: crate::serve::ConnectionLimits::default().header_timeout,
            request_timeout: crate::serve::ConnectionLimits::default().request_timeout,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct StoreSection {
    url: String,
    redis_prefix: String,
    #[serde(with = "humantime_serde")]
    dedupe_ttl: Duration,
    #[serde(with = "humantime_serde")]
    redis_timeout: Duration,
}

impl Default for StoreSection {
    fn default() -> Self {
        let options = StoreOptions::default();
        Self {
            url: "data/tandem.redb".into(),
            redis_prefix: options.redis_prefix,
            dedupe_ttl: options.dedupe_ttl,
            redis_timeout: options.redis_timeout,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct MetaSection {
    graph_url: String,
    app_id: Option<String>,
    #[serde(with = "humantime_serde")]
    send_timeout: Duration,
    app_secret_file: Option<PathBuf>,
    verify_token_file: Option<PathBuf>,
    access_token_file: Option<PathBuf>,
    // Present only to refuse them with a helpful message.
    app_secret: Option<toml::Value>,
    verify_token: Option<toml::Value>,
    access_token: Option<toml::Value>,
}

impl Default for MetaSection {
    fn default() -> Self {
        Self {
            graph_url: "https://graph.facebook.com/v23.0".into(),
            app_id: None,
            send_timeout: Duration::from_secs(10),
            app_secret_file: None,
            verify_token_file: None,
            access_token_file: None,
            app_secret: None,
            verify_token: None,
            access_token: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiSection {
    token_file: Option<PathBuf>,
    token: Option<toml::Value>,
    #[serde(default = "default_api_rate_limit")]
    rate_limit: u32,
    #[serde(default)]
    tokens: Vec<TokenSection>,
}

/// Loads and validates the settings from the layers described in the module docs.
///
/// `env` is the process environment as a map, so tests never change the real one.
///
/// # Errors
/// Returns the first problem found, naming the key.
pub fn load(cli: &CliOverrides, env: &HashMap<String, String>) -> Result<Settings, ConfigError> {
    let file = match &cli.config {
        Some(path) => Some(path.clone()),
        None => Some(PathBuf::from("tandem.toml")).filter(|p| p.exists()),
    };
    let parsed = match &file {
        Some(path) => parse_file(path)?,
        None => FileConfig::default(),
    };
    build(parsed, cli, env)
}

fn parse_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let key = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(&key, format!("cannot read the file: {e}")))?;
    toml::from_str(&text).map_err(|e| {
        let mut message = e.message().to_owned();
        if let Some(span) = e.span() {
            let line = text[..span.start.min(text.len())].lines().count().max(1);
            message = format!("line {line}: {message}");
        }
        ConfigError::new(key, message)
    })
}

pub(crate) fn refuse_inline(
    key: &str,
    env_name: &str,
    value: Option<&toml::Value>,
) -> Result<(), ConfigError> {
    match value {
        Some(_) => Err(ConfigError::new(
            key,
            format!(
                "secrets are not read from the config file; set {env_name} or {key}_file (a file holding it)"
            ),
        )),
        None => Ok(()),
    }
}

/// Reads a secret from `NAME`, `NAME_FILE` or the config's `*_file` path, in that order.
pub(crate) fn secret(
    env: &HashMap<String, String>,
    name: &str,
    key: &str,
    file: Option<&PathBuf>,
) -> Result<Option<SecretString>, ConfigError> {
    let file_var = format!("{name}_FILE");
    let value = if let Some(value) = env.get(name) {
        Some((name.to_owned(), value.clone()))
    } else {
        let path = env
            .get(&file_var)
            .map(PathBuf::from)
            .or_else(|| file.cloned());
        match path {
            Some(path) => {
                let source = if env.contains_key(&file_var) {
                    file_var.clone()
                } else {
                    format!("{key}_file")
                };
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    ConfigError::new(&source, format!("cannot read {}: {e}", path.display()))
                })?;
                Some((source, text.trim_end_matches(['\n', '\r']).to_owned()))
            }
            None => None,
        }
    };
    match value {
        Some((source, value)) if value.trim().is_empty() => {
            Err(ConfigError::new(source, "is empty"))
        }
        Some((_, value)) => Ok(Some(SecretString::from(value))),
        None => Ok(None),
    }
}

/// `[health]`, checked: a reminder needs both a number and a template.
pub(crate) fn health_config(
    h: HealthSection,
) -> Result<tandem_engine::health::HealthConfig, ConfigError> {
    if h.heartbeat.is_zero() || h.tick.is_zero() {
        return Err(ConfigError::new(
            "health.heartbeat",
            "heartbeat and tick must be longer than zero",
        ));
    }
    let reminder = match (h.reminder_to, h.reminder_template) {
        (None, None) => None,
        (Some(to), Some(template)) => Some(tandem_engine::health::Reminder {
            to: tandem_domain::Phone::parse(&to).map_err(|e| {
                ConfigError::new(
                    "health.reminder_to",
                    format!("{to:?} is not a WhatsApp number: {e}"),
                )
            })?,
            template,
            language: h.reminder_language,
        }),
        (Some(_), None) => {
            return Err(ConfigError::new(
                "health.reminder_template",
                "missing; the reminder is an approved template sent to health.reminder_to",
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                "health.reminder_to",
                "missing; the owner's own WhatsApp number, digits only",
            ));
        }
    };
    Ok(tandem_engine::health::HealthConfig {
        heartbeat: h.heartbeat,
        tick: h.tick,
        reminder,
        ..tandem_engine::health::HealthConfig::default()
    })
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            token_file: None,
            token: None,
            rate_limit: default_api_rate_limit(),
            tokens: Vec::new(),
        }
    }
}

/// Requests a second an API token may make by default.
fn default_api_rate_limit() -> u32 {
    50
}

/// The API's tokens: `TANDEM_API_TOKEN` (every scope) and `[[api.tokens]]`.
pub(crate) fn api_tokens(
    env: &HashMap<String, String>,
    main: Option<&SecretString>,
    sections: Vec<TokenSection>,
) -> Result<Vec<ApiToken>, ConfigError> {
    let mut tokens: Vec<ApiToken> = main
        .map(|token| ApiToken {
            name: "TANDEM_API_TOKEN".into(),
            token: token.clone(),
            scopes: Scope::ALL.to_vec(),
            agent: None,
            tenants: None,
        })
        .into_iter()
        .collect();
    for (i, t) in sections.into_iter().enumerate() {
        let key = format!("api.tokens[{i}]");
        refuse_inline(&format!("{key}.token"), "token_env", t.token.as_ref())?;
        let token = match (&t.token_env, &t.token_file) {
            (Some(var), _) => secret(env, var, &format!("{key}.token"), t.token_file.as_ref())?,
            (None, Some(file)) => secret(env, "", &format!("{key}.token"), Some(file))?,
            (None, None) => {
                return Err(ConfigError::new(
                    format!("{key}.token_env"),
                    "missing; name the environment variable (or token_file) holding the token",
                ));
            }
        };
        let Some(token) = token else {
            return Err(ConfigError::new(
                format!("{key}.token_env"),
                format!(
                    "{} is not set",
                    t.token_env.as_deref().unwrap_or("the token variable")
                ),
            ));
        };
        let mut scopes = Vec::new();
        for scope in &t.scopes {
            match Scope::ALL.into_iter().find(|s| s.as_str() == scope) {
                Some(s) => scopes.push(s),
                None => {
                    return Err(ConfigError::new(
                        format!("{key}.scopes"),
                        format!("unknown scope {scope:?}; the scopes are read, agent and admin"),
                    ));
                }
            }
        }
        let tenants = match t.tenants {
            Some(list) => {
                if let Some(bad) = list.iter().find(|id| !tandem_engine::tenants::valid_id(id)) {
                    return Err(ConfigError::new(
                        format!("{key}.tenants"),
                        format!("{bad:?} is not a tenant id"),
                    ));
                }
                Some(list)
            }
            None => None,
        };
        tokens.push(ApiToken {
            name: t.name,
            token,
            scopes,
            agent: t.agent,
            tenants,
        });
    }
    Ok(tokens)
}

/// Teams, agents and rules, checked; the first problem names its key.
pub(crate) fn routing(
    handoff: tandem_handoff::RoutingConfig,
) -> Result<tandem_handoff::Routing, ConfigError> {
    tandem_handoff::Routing::new(handoff).map_err(|errors| {
        let first = errors.first().cloned().unwrap_or_default();
        let (key, message) = first
            .split_once(": ")
            .unwrap_or(("handoff", first.as_str()));
        let more = if errors.len() > 1 {
            format!(
                " (and {} more: {})",
                errors.len() - 1,
                errors[1..].join("; ")
            )
        } else {
            String::new()
        };
        ConfigError::new(key, format!("{message}{more}"))
    })
}

/// The hook receivers: `TANDEM_HOOK_URL` with `TANDEM_HOOK_SECRET` (named `default`, every
/// event) and `[[hooks]]`.
pub(crate) fn hook_targets(
    env: &HashMap<String, String>,
    sections: Vec<HookSection>,
) -> Result<Vec<tandem_handoff::HookTarget>, ConfigError> {
    let mut targets = Vec::new();
    let url_ok = |key: &str, url: &str| {
        if url.starts_with("http://") || url.starts_with("https://") {
            Ok(())
        } else {
            Err(ConfigError::new(
                key,
                format!("{url:?} is not an http(s) URL"),
            ))
        }
    };
    if let Some(url) = env.get("TANDEM_HOOK_URL") {
        url_ok("TANDEM_HOOK_URL", url)?;
        let secret = secret(env, "TANDEM_HOOK_SECRET", "hooks.secret", None)?.ok_or_else(|| {
            ConfigError::new(
                "TANDEM_HOOK_SECRET",
                "missing; hooks are always signed, set it with TANDEM_HOOK_URL",
            )
        })?;
        targets.push(tandem_handoff::HookTarget {
            name: "default".into(),
            url: url.clone(),
            secret: secret.expose_secret().to_owned(),
            teams: Vec::new(),
            events: Vec::new(),
        });
    }
    for (i, h) in sections.into_iter().enumerate() {
        let key = format!("hooks[{i}]");
        refuse_inline(&format!("{key}.secret"), "secret_env", h.secret.as_ref())?;
        url_ok(&format!("{key}.url"), &h.url)?;
        if targets
            .iter()
            .any(|t: &tandem_handoff::HookTarget| t.name == h.name)
        {
            return Err(ConfigError::new(
                format!("{key}.name"),
                format!("{:?} is used twice", h.name),
            ));
        }
        let secret = match (&h.secret_env, &h.secret_file) {
            (Some(var), _) => secret(env, var, &format!("{key}.secret"), h.secret_file.as_ref())?,
            (None, Some(file)) => secret(env, "", &format!("{key}.secret"), Some(file))?,
            (None, None) => None,
        }
        .ok_or_else(|| {
            ConfigError::new(
                format!("{key}.secret_env"),
                "missing or empty; hooks are always signed: name the variable (or secret_file) holding the secret",
            )
        })?;
        let mut events = Vec::new();
        for name in &h.events {
            events.push(tandem_handoff::HookEvent::parse(name).ok_or_else(|| {
                let names: Vec<&str> = tandem_handoff::HookEvent::ALL
                    .iter()
                    .map(|e| e.name())
                    .collect();
                ConfigError::new(
                    format!("{key}.events"),
                    format!(
                        "unknown event {name:?}; the events are {}",
                        names.join(", ")
                    ),
                )
            })?);
        }
        targets.push(tandem_handoff::HookTarget {
            name: h.name,
            url: h.url,
            secret: secret.expose_secret().to_owned(),
            teams: h.teams,
            events,
        });
    }
    Ok(targets)
}

/// The flows' `config.<name>` values given as `TANDEM_FLOW_<NAME>` (name lower-cased).
pub fn flow_variables(env: &HashMap<String, String>) -> std::collections::BTreeMap<String, String> {
    env.iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("TANDEM_FLOW_")?.to_lowercase(), v.clone())))
        .collect()
}

fn env_duration(
    env: &HashMap<String, String>,
    name: &str,
    target: &mut Duration,
) -> Result<(), ConfigError> {
    if let Some(raw) = env.get(name) {
        *target = humantime::parse_duration(raw).map_err(|e| {
            ConfigError::new(
                name,
                format!("{raw:?} is not a duration such as 30m or 2s: {e}"),
            )
        })?;
    }
    Ok(())
}

fn retention_config(
    section: RetentionSection,
    env: &HashMap<String, String>,
) -> Result<tandem_engine::privacy::Retention, ConfigError> {
    let mut retention = tandem_engine::privacy::Retention {
        transcripts: section.transcripts,
        audit: section.audit,
        every: section.every,
        batch: section.batch,
    };
    for (name, target) in [
        ("TANDEM_RETENTION_TRANSCRIPTS", &mut retention.transcripts),
        ("TANDEM_RETENTION_AUDIT", &mut retention.audit),
    ] {
        let mut value = Duration::ZERO;
        if env.contains_key(name) {
            env_duration(env, name, &mut value)?;
            *target = Some(value);
        }
    }
    env_duration(env, "TANDEM_RETENTION_EVERY", &mut retention.every)?;
    for (key, value) in [
        ("retention.transcripts", retention.transcripts),
        ("retention.audit", retention.audit),
        ("retention.every", Some(retention.every)),
    ] {
        if value.is_some_and(|v| v.is_zero()) {
            return Err(ConfigError::new(key, "must be longer than 0s"));
        }
    }
    if retention.batch == 0 {
        return Err(ConfigError::new("retention.batch", "must be at least 1"));
    }
    Ok(retention)
}

fn build(
    file: FileConfig,
    cli: &CliOverrides,
    env: &HashMap<String, String>,
) -> Result<Settings, ConfigError> {
    let FileConfig {
        mut server,
        mut store,
        mut engine,
        mut meta,
        api,
        flows,
        handoff,
        hooks,
        health,
        retention,
        tenants,
    } = file;
    refuse_inline(
        "meta.app_secret",
        "TANDEM_APP_SECRET",
        meta.app_secret.as_ref(),
    )?;
    refuse_inline(
        "meta.verify_token",
        "TANDEM_VERIFY_TOKEN",
        meta.verify_token.as_ref(),
    )?;
    refuse_inline(
        "meta.access_token",
        "TANDEM_ACCESS_TOKEN",
        meta.access_token.as_ref(),
    )?;
    refuse_inline("api.token", "TANDEM_API_TOKEN", api.token.as_ref())?;

    if let Some(v) = env.get("TANDEM_LISTEN") {
        server.listen.clone_from(v);
    }
    if let Some(v) = env.get("TANDEM_STORE") {
        store.url.clone_from(v);
    }
    if let Some(v) = env.get("TANDEM_REDIS_PREFIX") {
        store.redis_prefix.clone_from(v);
    }
    if let Some(v) = env.get("TANDEM_GRAPH_URL") {
        meta.graph_url.clone_from(v);
    }
    if let Some(v) = env.get("TANDEM_APP_ID") {
        meta.app_id = Some(v.clone());
    }
    if let Some(v) = env.get("TANDEM_LOG_FORMAT") {
        server.log_format = match v.as_str() {
            "pretty" => LogFormat::Pretty,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::new(
                    "TANDEM_LOG_FORMAT",
                    format!("{other:?} is not pretty or json"),
                ));
            }
        };
    }
    if let Some(v) = env.get("TANDEM_WORKERS") {
        engine.workers = v.parse().map_err(|_| {
            ConfigError::new("TANDEM_WORKERS", format!("{v:?} is not a whole number"))
        })?;
    }
    env_duration(env, "TANDEM_HUMAN_IDLE", &mut engine.human_idle)?;
    env_duration(env, "TANDEM_SEND_BACKOFF", &mut engine.send_backoff)?;
    env_duration(env, "TANDEM_SEND_RECOVERY", &mut engine.send_recovery)?;
    env_duration(env, "TANDEM_LEASE", &mut engine.lease)?;
    env_duration(env, "TANDEM_BURST_WINDOW", &mut engine.burst_window)?;
    engine.retention = retention_config(retention, env)?;
    if let Some(v) = env.get("TANDEM_SEND_RATE") {
        engine.send_rate = v.parse().map_err(|_| {
            ConfigError::new("TANDEM_SEND_RATE", format!("{v:?} is not a whole number"))
        })?;
    }
    // An explicit directory must exist; the default `flows` is used when it does.
    let flows_dir = match cli
        .flows
        .clone()
        .or_else(|| env.get("TANDEM_FLOWS").map(PathBuf::from))
        .or(flows.dir)
    {
        Some(dir) if !dir.is_dir() => {
            return Err(ConfigError::new(
                "flows.dir",
                format!("{} is not a directory", dir.display()),
            ));
        }
        Some(dir) => Some(dir),
        None => Some(PathBuf::from("flows")).filter(|d| d.is_dir()),
    };
    let llm = match (env.get("TANDEM_LLM_BASE_URL"), env.get("TANDEM_LLM_MODEL")) {
        (Some(base_url), Some(model)) => {
            if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                return Err(ConfigError::new(
                    "TANDEM_LLM_BASE_URL",
                    format!("{base_url:?} is not an http(s) URL"),
                ));
            }
            let mut timeout = Duration::from_secs(4);
            env_duration(env, "TANDEM_LLM_TIMEOUT", &mut timeout)?;
            let concurrency = match env.get("TANDEM_LLM_CONCURRENCY") {
                Some(raw) => match raw.parse::<usize>() {
                    Ok(n) if n >= 1 => n,
                    _ => {
                        return Err(ConfigError::new(
                            "TANDEM_LLM_CONCURRENCY",
                            format!("{raw:?} is not a whole number of at least 1"),
                        ));
                    }
                },
                None => 8,
            };
            Some(LlmSettings {
                concurrency,
                base_url: base_url.clone(),
                model: model.clone(),
                api_key: secret(env, "TANDEM_LLM_API_KEY", "llm.api_key", None)?,
                timeout,
                structured_output: env
                    .get("TANDEM_LLM_JSON_MODE")
                    .is_none_or(|v| v != "1" && v != "true"),
            })
        }
        (Some(_), None) => {
            return Err(ConfigError::new(
                "TANDEM_LLM_MODEL",
                "missing; set it with TANDEM_LLM_BASE_URL",
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                "TANDEM_LLM_BASE_URL",
                "missing; set it with TANDEM_LLM_MODEL",
            ));
        }
        (None, None) => None,
    };
    let tenants_dir = match env.get("TANDEM_TENANTS").map(PathBuf::from).or(tenants.dir) {
        Some(dir) if !dir.is_dir() => {
            return Err(ConfigError::new(
                "tenants.dir",
                format!("{} is not a directory", dir.display()),
            ));
        }
        other => other,
    };
    let tenants_auto_create = match env.get("TANDEM_TENANTS_AUTO_CREATE").map(String::as_str) {
        Some("1" | "true") => true,
        Some("0" | "false") => false,
        Some(other) => {
            return Err(ConfigError::new(
                "TANDEM_TENANTS_AUTO_CREATE",
                format!("{other:?} is not true or false"),
            ));
        }
        None => tenants.auto_create,
    };
    if tenants_auto_create {
        let Some(dir) = &tenants_dir else {
            return Err(ConfigError::new(
                "tenants.auto_create",
                "needs tenants.dir (TANDEM_TENANTS): new tenants are created there",
            ));
        };
        let template = dir
            .join(crate::tenants::TEMPLATE)
            .join(crate::tenants::FILE);
        if !template.is_file() {
            return Err(ConfigError::new(
                "tenants.auto_create",
                format!(
                    "needs a template tenant: {} does not exist",
                    template.display()
                ),
            ));
        }
    }
    let prompts_dir = env
        .get("TANDEM_PROMPTS")
        .map_or_else(|| PathBuf::from("prompts"), PathBuf::from);
    let flow_variables = flow_variables(env);
    if let Some(v) = &cli.listen {
        server.listen.clone_from(v);
    }
    if let Some(v) = &cli.store {
        store.url.clone_from(v);
    }

    let listen: SocketAddr = server.listen.parse().map_err(|_| {
        ConfigError::new(
            "server.listen",
            format!(
                "{:?} is not an address such as 127.0.0.1:8080",
                server.listen
            ),
        )
    })?;
    if server.max_body_bytes < 1024 {
        return Err(ConfigError::new(
            "server.max_body_bytes",
            "must be at least 1024",
        ));
    }
    for (key, value) in [
        ("server.header_timeout", server.header_timeout),
        ("server.request_timeout", server.request_timeout),
    ] {
        if value.is_zero() {
            return Err(ConfigError::new(key, "must be longer than 0s"));
        }
    }
    if store.url.trim().is_empty() {
        return Err(ConfigError::new(
            "store.url",
            "is empty; give a file path or a redis:// URL",
        ));
    }
    if store.redis_prefix.is_empty() || store.redis_prefix.contains(['{', '}', ' ']) {
        return Err(ConfigError::new(
            "store.redis_prefix",
            "must be non-empty, without spaces or braces",
        ));
    }
    if store.dedupe_ttl < Duration::from_secs(60) {
        return Err(ConfigError::new(
            "store.dedupe_ttl",
            "must be at least 1m (Meta retries for up to 7 days)",
        ));
    }
    engine
        .validate()
        .map_err(|(key, message)| ConfigError::new(key, message))?;
    if !(meta.graph_url.starts_with("http://") || meta.graph_url.starts_with("https://")) {
        return Err(ConfigError::new(
            "meta.graph_url",
            format!("{:?} is not an http(s) URL", meta.graph_url),
        ));
    }

    let app_secret = secret(
        env,
        "TANDEM_APP_SECRET",
        "meta.app_secret",
        meta.app_secret_file.as_ref(),
    )?;
    let verify_token = secret(
        env,
        "TANDEM_VERIFY_TOKEN",
        "meta.verify_token",
        meta.verify_token_file.as_ref(),
    )?;
    let access_token = secret(
        env,
        "TANDEM_ACCESS_TOKEN",
        "meta.access_token",
        meta.access_token_file.as_ref(),
    )?;
    let api_token = secret(
        env,
        "TANDEM_API_TOKEN",
        "api.token",
        api.token_file.as_ref(),
    )?;
    let api_tokens = api_tokens(env, api_token.as_ref(), api.tokens)?;
    let api_rate_limit = match env.get("TANDEM_API_RATE_LIMIT") {
        Some(v) => v.parse().map_err(|_| {
            ConfigError::new(
                "TANDEM_API_RATE_LIMIT",
                format!("{v:?} is not a whole number of requests a second"),
            )
        })?,
        None => api.rate_limit,
    };
    let routing = routing(handoff)?;
    let hooks = hook_targets(env, hooks)?;
    let mut health = health_config(health)?;
    health.send_rate = engine.send_rate;
    if !cli.dev {
        // Every missing secret at once, so one restart fixes them all.
        let missing: Vec<(&str, &str)> = [
            ("meta.app_secret", "TANDEM_APP_SECRET", app_secret.is_none()),
            (
                "meta.verify_token",
                "TANDEM_VERIFY_TOKEN",
                verify_token.is_none(),
            ),
            ("api.token", "TANDEM_API_TOKEN", api_tokens.is_empty()),
        ]
        .into_iter()
        .filter(|(_, _, absent)| *absent)
        .map(|(key, var, _)| (key, var))
        .collect();
        if let Some((first, _)) = missing.first() {
            let vars: Vec<String> = missing
                .iter()
                .map(|(key, var)| format!("{var} ({key})"))
                .collect();
            return Err(ConfigError::new(
                *first,
                format!(
                    "missing: {}; set each (or its _FILE variant), or start with --dev to run without them",
                    vars.join(", ")
                ),
            ));
        }
    }
    let transcript_cap = engine.transcript_cap;
    Ok(Settings {
        listen,
        max_body_bytes: server.max_body_bytes,
        shutdown_grace: server.shutdown_grace,
        connection_limits: crate::serve::ConnectionLimits {
            header_timeout: server.header_timeout,
            request_timeout: server.request_timeout,
        },
        log_format: server.log_format,
        store_url: store.url,
        store: StoreOptions {
            dedupe_ttl: store.dedupe_ttl,
            transcript_cap,
            redis_prefix: store.redis_prefix,
            redis_timeout: store.redis_timeout,
        },
        engine,
        app_secret,
        verify_token,
        access_token,
        graph_url: meta.graph_url,
        app_id: meta.app_id,
        api_tokens,
        api_rate_limit,
        routing,
        hooks,
        health,
        dev: cli.dev,
        flows_dir,
        flow_variables,
        send_timeout: meta.send_timeout,
        llm,
        embedder: embedder_settings(env)?,
        transcriber: transcriber_settings(env)?,
        prompts_dir,
        tenants_dir,
        tenants_auto_create,
    })
}

impl Settings {
    /// Returns the app secret's bytes, when signatures are checked.
    pub fn app_secret_bytes(&self) -> Option<Vec<u8>> {
        self.app_secret
            .as_ref()
            .map(|s| s.expose_secret().as_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn full_env() -> HashMap<String, String> {
        env(&[
            ("TANDEM_APP_SECRET", "s"),
            ("TANDEM_VERIFY_TOKEN", "v"),
            ("TANDEM_API_TOKEN", "a"),
        ])
    }

    fn from_toml(text: &str, env: &HashMap<String, String>) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tandem.toml");
        std::fs::write(&path, text).unwrap();
        load(
            &CliOverrides {
                config: Some(path),
                ..CliOverrides::default()
            },
            env,
        )
    }

    #[test]
    fn llm_concurrency_defaults_to_eight_and_must_be_at_least_one() {
        let mut env = full_env();
        env.insert(
            "TANDEM_LLM_BASE_URL".into(),
            "http://127.0.0.1:8091/v1".into(),
        );
        env.insert("TANDEM_LLM_MODEL".into(), "m".into());
        let llm = |env: &HashMap<String, String>| {
            from_toml("", env).map(|s| s.llm.map(|l| l.concurrency))
        };
        assert_eq!(llm(&env).unwrap(), Some(8));
        env.insert("TANDEM_LLM_CONCURRENCY".into(), "1".into());
        assert_eq!(llm(&env).unwrap(), Some(1));
        env.insert("TANDEM_LLM_CONCURRENCY".into(), "0".into());
        assert_eq!(llm(&env).unwrap_err().key, "TANDEM_LLM_CONCURRENCY");
    }

    #[test]
    fn retention_is_off_by_default_and_set_by_file_or_environment() {
        let off = from_toml("", &full_env()).unwrap().engine.retention;
        assert!(!off.is_on());
        let file = from_toml("[retention]\ntranscripts = \"180d\"\n", &full_env())
            .unwrap()
            .engine
            .retention;
        assert_eq!(file.transcripts, Some(Duration::from_secs(180 * 86_400)));
        assert_eq!(file.audit, None);
        let mut env = full_env();
        env.insert("TANDEM_RETENTION_AUDIT".into(), "400d".into());
        let both = from_toml("[retention]\ntranscripts = \"180d\"\n", &env)
            .unwrap()
            .engine
            .retention;
        assert_eq!(both.audit, Some(Duration::from_secs(400 * 86_400)));
        let zero = from_toml("[retention]\ntranscripts = \"0s\"\n", &full_env()).unwrap_err();
        assert_eq!(zero.key, "retention.transcripts");
        let timeouts = from_toml("[server]\nheader_timeout = \"0s\"\n", &full_env()).unwrap_err();
        assert_eq!(timeouts.key, "server.header_timeout");
    }

    #[test]
    fn the_api_rate_limit_defaults_to_fifty_and_is_set_by_file_or_environment() {
        assert_eq!(from_toml("", &full_env()).unwrap().api_rate_limit, 50);
        let file = from_toml("[api]\nrate_limit = 5\n", &full_env()).unwrap();
        assert_eq!(file.api_rate_limit, 5);
        let mut off = full_env();
        off.insert("TANDEM_API_RATE_LIMIT".into(), "0".into());
        assert_eq!(
            from_toml("[api]\nrate_limit = 5\n", &off)
                .unwrap()
                .api_rate_limit,
            0
        );
        let mut bad = full_env();
        bad.insert("TANDEM_API_RATE_LIMIT".into(), "fast".into());
        let error = from_toml("", &bad).unwrap_err();
        assert!(
            error.to_string().contains("TANDEM_API_RATE_LIMIT"),
            "{error}"
        );
    }

    #[test]
    fn without_credentials_the_server_refuses_unless_dev() {
        let err = load(&CliOverrides::default(), &HashMap::new()).unwrap_err();
        assert_eq!(err.key, "meta.app_secret");
        for var in [
            "TANDEM_APP_SECRET",
            "TANDEM_VERIFY_TOKEN",
            "TANDEM_API_TOKEN",
        ] {
            assert!(
                err.message.contains(var),
                "all missing secrets at once: {err}"
            );
        }
        let dev = load(
            &CliOverrides {
                dev: true,
                ..CliOverrides::default()
            },
            &HashMap::new(),
        )
        .unwrap();
        assert!(dev.app_secret.is_none());
        assert!(dev.dev);
    }

    #[test]
    fn layers_apply_in_order() {
        let mut e = full_env();
        e.insert("TANDEM_HUMAN_IDLE".into(), "2s".into());
        e.insert("TANDEM_STORE".into(), "from-env.redb".into());
        let cli = CliOverrides {
            store: Some("from-cli.redb".into()),
            ..CliOverrides::default()
        };
        let s = load(&cli, &e).unwrap();
        assert_eq!(s.engine.human_idle, Duration::from_secs(2));
        assert_eq!(s.store_url, "from-cli.redb");
        let s = from_toml(
            "[engine]\nhuman_idle = \"5m\"\n[store]\nurl = \"x.redb\"\n",
            &full_env(),
        )
        .unwrap();
        assert_eq!(s.engine.human_idle, Duration::from_secs(300));
        assert_eq!(s.store_url, "x.redb");
    }

    #[test]
    fn errors_name_the_key() {
        let err = from_toml("[meta]\napp_secret = \"oops\"\n", &full_env()).unwrap_err();
        assert_eq!(err.key, "meta.app_secret");
        assert!(err.message.contains("TANDEM_APP_SECRET"));
        let err = from_toml("[engine]\nhuman_idle = \"soon\"\n", &full_env()).unwrap_err();
        assert!(err.message.contains("line 2"), "{err}");
        let err = from_toml("[engine]\nhuman_idl = \"1m\"\n", &full_env()).unwrap_err();
        assert!(err.message.contains("human_idl"), "{err}");
        let mut e = full_env();
        e.insert("TANDEM_HUMAN_IDLE".into(), "soon".into());
        assert_eq!(
            load(&CliOverrides::default(), &e).unwrap_err().key,
            "TANDEM_HUMAN_IDLE"
        );
        let cli = CliOverrides {
            listen: Some("nowhere".into()),
            ..CliOverrides::default()
        };
        assert_eq!(load(&cli, &full_env()).unwrap_err().key, "server.listen");
        e = full_env();
        e.insert("TANDEM_API_TOKEN".into(), "  ".into());
        assert_eq!(
            load(&CliOverrides::default(), &e).unwrap_err().key,
            "TANDEM_API_TOKEN"
        );
    }

    #[test]
    fn the_shipped_example_file_is_valid_and_holds_the_defaults() {
        let path = PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tandem.example.toml"
        ));
        let cli = CliOverrides {
            config: Some(path),
            ..CliOverrides::default()
        };
        let from_file = load(&cli, &full_env()).unwrap();
        let defaults = load(&CliOverrides::default(), &full_env()).unwrap();
        assert_eq!(from_file.engine, defaults.engine);
        assert_eq!(from_file.listen, defaults.listen);
        assert_eq!(from_file.store_url, defaults.store_url);
        assert_eq!(from_file.store.dedupe_ttl, defaults.store.dedupe_ttl);
        assert_eq!(from_file.max_body_bytes, defaults.max_body_bytes);
    }

    /// The settings of the full test environment with `pairs` added.
    fn load_with(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let mut e = full_env();
        for (k, v) in pairs {
            e.insert((*k).to_owned(), (*v).to_owned());
        }
        load(&CliOverrides::default(), &e)
    }

    #[test]
    fn the_transcriber_is_an_endpoint_off_by_default() {
        assert!(load_with(&[]).unwrap().transcriber.is_none());
        let t = load_with(&[("TANDEM_TRANSCRIBER", "http://127.0.0.1:9/v1")])
            .unwrap()
            .transcriber
            .unwrap();
        assert_eq!(
            (t.model.as_str(), t.timeout, t.language),
            ("whisper-1", Duration::from_secs(20), None)
        );
        let t = load_with(&[
            ("TANDEM_TRANSCRIBER", "http://127.0.0.1:9/v1"),
            ("TANDEM_TRANSCRIBER_MODEL", "ggml-small"),
            ("TANDEM_TRANSCRIBER_TIMEOUT", "45s"),
            ("TANDEM_TRANSCRIBER_LANGUAGE", "pt"),
            ("TANDEM_TRANSCRIBER_API_KEY", "sk-x"),
        ])
        .unwrap()
        .transcriber
        .unwrap();
        assert_eq!(t.model, "ggml-small");
        assert_eq!(t.timeout, Duration::from_secs(45));
        assert_eq!(t.language.as_deref(), Some("pt"));
        assert!(t.api_key.is_some());
        for (key, value) in [
            ("TANDEM_TRANSCRIBER", "whisper.local:8080"),
            ("TANDEM_TRANSCRIBER_LANGUAGE", "Portuguese"),
            ("TANDEM_TRANSCRIBER_TIMEOUT", "soon"),
        ] {
            let mut pairs = vec![("TANDEM_TRANSCRIBER", "http://127.0.0.1:9/v1")];
            pairs.retain(|(k, _)| *k != key);
            pairs.push((key, value));
            assert_eq!(load_with(&pairs).unwrap_err().key, key, "{key}={value}");
        }
    }

    #[test]
    fn the_embedder_is_a_model_folder_or_an_endpoint_with_a_model() {
        assert!(load_with(&[]).unwrap().embedder.is_none());
        let s = load_with(&[
            ("TANDEM_EMBEDDER", "http://127.0.0.1:9/v1"),
            ("TANDEM_EMBEDDER_MODEL", "e5"),
            ("TANDEM_SEMANTIC_THRESHOLD", "0.6"),
        ])
        .unwrap();
        let e = s.embedder.unwrap();
        assert_eq!(
            e.source,
            EmbedderSource::Endpoint {
                base_url: "http://127.0.0.1:9/v1".into(),
                model: "e5".into()
            }
        );
        assert!((e.options.threshold - 0.6).abs() < 1e-6);
        assert_eq!(e.timeout, Duration::from_secs(1));
        let missing_model = load_with(&[("TANDEM_EMBEDDER", "http://127.0.0.1:9/v1")]);
        assert_eq!(missing_model.unwrap_err().key, "TANDEM_EMBEDDER_MODEL");
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().display().to_string();
        let not_a_model = load_with(&[("TANDEM_EMBEDDER", folder.as_str())]).unwrap_err();
        assert_eq!(not_a_model.key, "TANDEM_EMBEDDER");
        assert!(
            not_a_model.to_string().contains("config.json"),
            "{not_a_model}"
        );
        for file in ["config.json", "tokenizer.json", "model.safetensors"] {
            std::fs::write(dir.path().join(file), "{}").unwrap();
        }
        let s = load_with(&[("TANDEM_EMBEDDER", folder.as_str())]).unwrap();
        assert_eq!(
            s.embedder.unwrap().source,
            EmbedderSource::Local(dir.path().into())
        );
        let bad = load_with(&[
            ("TANDEM_EMBEDDER", folder.as_str()),
            ("TANDEM_SEMANTIC_LEXICAL_THRESHOLD", "1.5"),
        ]);
        assert_eq!(bad.unwrap_err().key, "TANDEM_SEMANTIC_LEXICAL_THRESHOLD");
    }

    #[test]
    fn secrets_can_come_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let secret_path = dir.path().join("secret");
        std::fs::write(&secret_path, "from-file\n").unwrap();
        let mut e = full_env();
        e.remove("TANDEM_APP_SECRET");
        e.insert(
            "TANDEM_APP_SECRET_FILE".into(),
            secret_path.display().to_string(),
        );
        let s = load(&CliOverrides::default(), &e).unwrap();
        assert_eq!(s.app_secret_bytes().unwrap(), b"from-file");
        e.insert(
            "TANDEM_APP_SECRET_FILE".into(),
            "/nonexistent/secret".into(),
        );
        assert_eq!(
            load(&CliOverrides::default(), &e).unwrap_err().key,
            "TANDEM_APP_SECRET_FILE"
        );
    }

    #[test]
    fn handoff_hooks_and_tokens_are_checked_with_the_key_named() {
        let mut e = full_env();
        e.insert("CRM_SECRET".into(), "s3cret".into());
        e.insert("DESK_TOKEN".into(), "t0ken".into());
        let ok = from_toml(
            "[[handoff.teams]]\nid = \"support\"\n[[handoff.agents]]\nid = \"ana\"\nteams = [\"support\"]\n\
             [[hooks]]\nname = \"crm\"\nurl = \"http://127.0.0.1:9/h\"\nsecret_env = \"CRM_SECRET\"\nevents = [\"conversation.assigned\"]\n\
             [[api.tokens]]\nname = \"desk\"\ntoken_env = \"DESK_TOKEN\"\nscopes = [\"read\"]\nagent = \"ana\"\n",
            &e,
        )
        .unwrap();
        assert_eq!(ok.hooks.len(), 1);
        assert_eq!(ok.hooks[0].secret, "s3cret");
        assert_eq!(ok.api_tokens.len(), 2, "TANDEM_API_TOKEN and desk");
        assert_eq!(ok.api_tokens[1].scopes, [Scope::Read]);
        assert!(ok.routing.agent("ana").is_some());
        let key = |toml: &str| from_toml(toml, &e).unwrap_err().key;
        assert_eq!(
            key("[[hooks]]\nname = \"x\"\nurl = \"http://h\"\n"),
            "hooks[0].secret_env"
        );
        assert_eq!(
            key(
                "[[hooks]]\nname = \"x\"\nurl = \"http://h\"\nsecret_env = \"CRM_SECRET\"\nevents = [\"nope\"]\n"
            ),
            "hooks[0].events"
        );
        assert_eq!(
            key("[[hooks]]\nname = \"x\"\nurl = \"h\"\nsecret_env = \"CRM_SECRET\"\n"),
            "hooks[0].url"
        );
        assert_eq!(
            key("[[hooks]]\nname = \"x\"\nurl = \"http://h\"\nsecret = \"inline\"\n"),
            "hooks[0].secret"
        );
        assert_eq!(
            key("[[handoff.agents]]\nid = \"ana\"\nteams = [\"ghost\"]\n"),
            "handoff.agents[0].teams"
        );
        assert_eq!(
            key("[[api.tokens]]\nname = \"d\"\ntoken_env = \"DESK_TOKEN\"\nscopes = [\"root\"]\n"),
            "api.tokens[0].scopes"
        );
        let mut hook_env = full_env();
        hook_env.insert("TANDEM_HOOK_URL".into(), "http://127.0.0.1:9/h".into());
        assert_eq!(
            load(&CliOverrides::default(), &hook_env).unwrap_err().key,
            "TANDEM_HOOK_SECRET"
        );
        hook_env.insert("TANDEM_HOOK_SECRET".into(), "k".into());
        let s = load(&CliOverrides::default(), &hook_env).unwrap();
        assert_eq!(s.hooks[0].name, "default");
    }

    #[test]
    fn the_reminder_needs_a_number_and_a_template() {
        let key = |toml: &str| from_toml(toml, &full_env()).unwrap_err().key;
        assert_eq!(
            key("[health]\nreminder_to = \"351910000000\"\n"),
            "health.reminder_template"
        );
        assert_eq!(
            key("[health]\nreminder_template = \"t\"\n"),
            "health.reminder_to"
        );
        assert_eq!(
            key("[health]\nreminder_to = \"+351 91\"\nreminder_template = \"t\"\n"),
            "health.reminder_to"
        );
        let ok = from_toml(
            "[engine]\nsend_rate = 5\n[health]\nheartbeat = \"2d\"\nreminder_to = \"351910000000\"\nreminder_template = \"t\"\n",
            &full_env(),
        )
        .unwrap();
        assert_eq!(ok.health.heartbeat, Duration::from_secs(2 * 86_400));
        assert_eq!(ok.health.send_rate, 5);
        assert_eq!(ok.health.reminder.unwrap().template, "t");
    }
}
