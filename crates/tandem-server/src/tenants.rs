//! Tenants on disk and in force: reading `tenants/<id>/tandem.toml` (with the tenant's
//! `flows/`), building each tenant's parts, and putting changes in force without a restart.
//!
//! A tenant file holds what is the business's own; everything else (store, Meta app,
//! engine, LLM, prompts) is the deployment's and shared:
//!
//! ```toml
//! numbers = ["106540000000001"]      # phone number ids it owns
//! wabas = ["102290129340398"]        # and every number of these WABAs
//! send_rate = 20                     # messages a second per number (default: engine.send_rate)
//! [meta]
//! access_token_env = "ACME_ACCESS_TOKEN"   # or access_token_file = "token" (relative to the tenant's directory)
//! [flows]
//! dir = "flows"                      # default: <tenant>/flows when it exists
//! [handoff]                          # teams, agents, rules: as in tandem.toml
//! [[hooks]]                          # as in tandem.toml
//! [[api.tokens]]                     # as in tandem.toml; limited to this tenant
//! [health]                           # reminder_to, reminder_template, reminder_language
//! ```
//!
//! Reloading ([`Declared::reload`]) rebuilds only the tenants whose files changed. A tenant
//! whose new files are invalid keeps running as it was (a new one is not added), and the
//! error is logged and counted; a change that would give one number to two tenants is
//! refused whole.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use secrecy::SecretString;
use serde::Deserialize;
use tandem_domain::{Clock, PhoneNumberId};
use tandem_engine::sender::LinkCache;
use tandem_engine::{
    Desk, EngineConfig, FlowsHandle, Responder, SendPolicy, Sender, Tenant, TenantParts, Tenants,
};
use tandem_store::Store;
use tandem_whatsapp::GraphClient;

use crate::config::{
    ApiToken, ConfigError, FlowsSection, HealthSection, HookSection, Settings, TokenSection,
};
use crate::routes::auth::TokenBook;

/// The name of a tenant's configuration file inside its directory.
pub const FILE: &str = "tandem.toml";

/// The directory (inside the tenants' directory) new tenants are copied from when Embedded
/// Signup shares a new WABA (`tenants.auto_create`). Never loaded as a tenant itself.
pub const TEMPLATE: &str = "_template";

/// A tenant as configured, checked, before its clients are built.
#[derive(Debug, Clone)]
pub struct TenantSpec {
    /// The tenant's id (its directory's name).
    pub id: String,
    /// Phone number ids it owns.
    pub numbers: Vec<PhoneNumberId>,
    /// WABAs it owns.
    pub wabas: Vec<String>,
    /// The Cloud API token its sends carry; none: it cannot send.
    pub access_token: Option<SecretString>,
    /// Its flows; none: its lanes only record.
    pub flows_dir: Option<PathBuf>,
    /// Its teams, agents and rules.
    pub routing: tandem_handoff::Routing,
    /// Its hook targets, with the names it gave them.
    pub hooks: Vec<tandem_handoff::HookTarget>,
    /// Its API tokens (each limited to it).
    pub api_tokens: Vec<ApiToken>,
    /// The owner's reminder to open the Business App.
    pub reminder: Option<tandem_engine::health::Reminder>,
    /// Messages a second per number.
    pub send_rate: u32,
    /// Its LLM stage.
    pub llm: TenantLlm,
    /// How long its transcripts are kept (`None`: as the deployment's `[retention]`).
    pub transcripts_kept: Option<Duration>,
}

/// Which LLM stage a tenant's bot asks.
#[derive(Debug, Clone, Default)]
pub enum TenantLlm {
    /// The deployment's (`TANDEM_LLM_*`), if any.
    #[default]
    Deployment,
    /// None: the local stages and the fallback only.
    Off,
    /// Its own endpoint and model; prompts from `<tenant>/prompts/` when that exists.
    Own(crate::config::LlmSettings, PathBuf),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantFile {
    #[serde(default)]
    numbers: Vec<String>,
    #[serde(default)]
    wabas: Vec<String>,
    send_rate: Option<u32>,
    #[serde(default)]
    meta: TenantMeta,
    #[serde(default)]
    flows: FlowsSection,
    #[serde(default)]
    handoff: tandem_handoff::RoutingConfig,
    #[serde(default)]
    hooks: Vec<HookSection>,
    #[serde(default)]
    api: TenantApi,
    #[serde(default)]
    health: HealthSection,
    #[serde(default)]
    llm: TenantLlmSection,
    #[serde(default)]
    retention: TenantRetention,
}

/// `[llm]` of a tenant: its own endpoint, or none.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct TenantLlmSection {
    enabled: bool,
    base_url: Option<String>,
    model: Option<String>,
    api_key_env: Option<String>,
    #[serde(with = "humantime_serde")]
    timeout: Duration,
    json_mode: bool,
    concurrency: usize,
}

impl Default for TenantLlmSection {
    fn default() -> Self {
        Self {
            enabled: true,
            base_url: None,
            model: None,
            api_key_env: None,
            timeout: Duration::from_secs(4),
            json_mode: false,
            concurrency: 8,
        }
    }
}

/// `[retention]` of a tenant.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantRetention {
    #[serde(default, with = "humantime_serde")]
    transcripts: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantMeta {
    access_token_env: Option<String>,
    access_token_file: Option<PathBuf>,
    // Present only to refuse it with a helpful message.
    access_token: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantApi {
    #[serde(default)]
    tokens: Vec<TokenSection>,
}

impl TenantSpec {
    /// The implicit tenant of a single-business deployment: the top-level settings.
    pub fn implicit(settings: &Settings) -> Self {
        Self {
            id: tandem_engine::tenants::DEFAULT_TENANT.to_owned(),
            numbers: Vec::new(),
            wabas: Vec::new(),
            access_token: settings.access_token.clone(),
            flows_dir: settings.flows_dir.clone(),
            routing: settings.routing.clone(),
            hooks: settings.hooks.clone(),
            api_tokens: Vec::new(),
            reminder: settings.health.reminder.clone(),
            send_rate: settings.engine.send_rate,
            llm: TenantLlm::Deployment,
            transcripts_kept: None,
        }
    }

    /// Reads and checks the tenant in `dir` (its id is the directory's name); relative paths
    /// in its file are read from `dir`. Errors name the file and the key.
    ///
    /// # Errors
    /// The first problem found.
    pub fn load(
        dir: &Path,
        env: &HashMap<String, String>,
        settings: &Settings,
    ) -> Result<Self, ConfigError> {
        let path = dir.join(FILE);
        let at =
            |e: ConfigError| ConfigError::new(format!("{}: {}", path.display(), e.key), e.message);
        let id = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if !tandem_engine::tenants::valid_id(&id) {
            return Err(ConfigError::new(
                dir.display().to_string(),
                format!(
                    "{id:?} is not a tenant id: name the directory with 1 to 63 lowercase letters, digits, '-' and '_'"
                ),
            ));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| {
            ConfigError::new(
                path.display().to_string(),
                format!("cannot read the file: {e}"),
            )
        })?;
        let file: TenantFile = toml::from_str(&text).map_err(|e| {
            let mut message = e.message().to_owned();
            if let Some(span) = e.span() {
                let line = text[..span.start.min(text.len())].lines().count().max(1);
                message = format!("line {line}: {message}");
            }
            ConfigError::new(path.display().to_string(), message)
        })?;
        crate::config::refuse_inline(
            "meta.access_token",
            "access_token_env",
            file.meta.access_token.as_ref(),
        )
        .map_err(at)?;
        let mut numbers = Vec::new();
        for raw in &file.numbers {
            numbers.push(
                PhoneNumberId::parse(raw)
                    .map_err(|e| at(ConfigError::new("numbers", format!("{raw:?}: {e}"))))?,
            );
        }
        if let Some(bad) = file
            .wabas
            .iter()
            .find(|w| w.is_empty() || !w.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(at(ConfigError::new(
                "wabas",
                format!("{bad:?} is not a WABA id (digits)"),
            )));
        }
        let access_token = match (&file.meta.access_token_env, &file.meta.access_token_file) {
            (Some(var), _) => {
                let token =
                    crate::config::secret(env, var, "meta.access_token", None).map_err(at)?;
                Some(token.ok_or_else(|| {
                    at(ConfigError::new(
                        "meta.access_token_env",
                        format!("{var} is not set"),
                    ))
                })?)
            }
            (None, Some(file)) => crate::config::secret(
                &HashMap::new(),
                "",
                "meta.access_token",
                Some(&dir.join(file)),
            )
            .map_err(at)?,
            (None, None) => None,
        };
        let flows_dir = match file.flows.dir {
            Some(flows) => {
                let flows = dir.join(flows);
                if !flows.is_dir() {
                    return Err(at(ConfigError::new(
                        "flows.dir",
                        format!("{} is not a directory", flows.display()),
                    )));
                }
                Some(flows)
            }
            None => Some(dir.join("flows")).filter(|d| d.is_dir()),
        };
        let routing = crate::config::routing(file.handoff).map_err(at)?;
        // A tenant's hooks are its own: the deployment's TANDEM_HOOK_URL is not one of them.
        let mut hook_env = env.clone();
        hook_env.remove("TANDEM_HOOK_URL");
        let mut hooks = file.hooks;
        for h in &mut hooks {
            h.rebase(dir);
        }
        let hooks = crate::config::hook_targets(&hook_env, hooks).map_err(at)?;
        let mut tokens = file.api.tokens;
        for t in &mut tokens {
            t.rebase(dir, &id);
        }
        let api_tokens = crate::config::api_tokens(env, None, tokens).map_err(at)?;
        let reminder = crate::config::health_config(file.health)
            .map_err(at)?
            .reminder;
        let send_rate = file.send_rate.unwrap_or(settings.engine.send_rate);
        if send_rate == 0 {
            return Err(at(ConfigError::new("send_rate", "must be at least 1")));
        }
        let llm = tenant_llm(file.llm, dir, env).map_err(at)?;
        if file.retention.transcripts.is_some_and(|d| d.is_zero()) {
            return Err(at(ConfigError::new(
                "retention.transcripts",
                "must be longer than 0s (leave it out to follow the deployment)",
            )));
        }
        Ok(Self {
            id,
            numbers,
            wabas: file.wabas,
            access_token,
            flows_dir,
            routing,
            hooks,
            api_tokens,
            reminder,
            send_rate,
            llm,
            transcripts_kept: file.retention.transcripts,
        })
    }
}

/// A tenant's `[llm]`, checked: off, the deployment's, or its own endpoint and model.
fn tenant_llm(
    section: TenantLlmSection,
    dir: &Path,
    env: &HashMap<String, String>,
) -> Result<TenantLlm, ConfigError> {
    if !section.enabled {
        return Ok(TenantLlm::Off);
    }
    let (base_url, model) = match (section.base_url, section.model) {
        (None, None) => return Ok(TenantLlm::Deployment),
        (Some(url), Some(model)) => (url, model),
        (Some(_), None) => {
            return Err(ConfigError::new(
                "llm.model",
                "missing; set it with llm.base_url",
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                "llm.base_url",
                "missing; set it with llm.model",
            ));
        }
    };
    if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
        return Err(ConfigError::new(
            "llm.base_url",
            format!("{base_url:?} is not an http(s) URL"),
        ));
    }
    if section.concurrency == 0 {
        return Err(ConfigError::new("llm.concurrency", "must be at least 1"));
    }
    let api_key = match &section.api_key_env {
        Some(var) => Some(
            crate::config::secret(env, var, "llm.api_key", None)?
                .ok_or_else(|| ConfigError::new("llm.api_key_env", format!("{var} is not set")))?,
        ),
        None => None,
    };
    let prompts = dir.join("prompts");
    Ok(TenantLlm::Own(
        crate::config::LlmSettings {
            base_url,
            model,
            api_key,
            timeout: section.timeout,
            structured_output: !section.json_mode,
            concurrency: section.concurrency,
        },
        prompts,
    ))
}

/// Every subdirectory of `dir` holding a tenant file, by name; names starting with `_` (the
/// template) or `.` (work in progress) are not tenants.
pub fn tenant_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with(['_', '.']))
        .map(|e| e.path())
        .filter(|p| p.join(FILE).is_file())
        .collect();
    dirs.sort();
    dirs
}

/// What building a tenant needs besides its spec; shared by every tenant.
#[derive(Debug, Clone)]
pub struct TenantBuilder {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The Graph API client whose connections every tenant shares.
    pub graph: GraphClient,
    /// The engine's settings.
    pub engine: EngineConfig,
    /// Variables flows may read.
    pub flow_variables: BTreeMap<String, String>,
    /// The deployment's LLM stage, shared by the tenants that use it.
    pub llm: Option<Arc<tandem_classify::llm::LlmClassifier>>,
    /// The deployment's semantic stage, shared by every tenant (tenants with identical
    /// flows share one head).
    pub semantic: Option<Arc<tandem_engine::semantic::SemanticStage>>,
    /// The deployment's transcriber of voice notes, used with each tenant's own token.
    pub transcriber: Option<Arc<tandem_classify::transcribe::Transcriber>>,
    /// The deployment's prompts, for a tenant with its own LLM and no prompts of its own.
    pub prompts_dir: PathBuf,
    /// The HTTP client of flows' `call` steps.
    pub calls: reqwest::Client,
    /// Link states shared with the health monitor.
    pub links: LinkCache,
    /// Flows already loaded, by a digest of their files: tenants with identical flows (a
    /// template bot) share one copy and one trained model.
    pub loaded_flows: FlowsCache,
}

/// Loaded flows by a digest of their directory's files; an entry lives while a tenant
/// holds its flows.
#[derive(Debug, Clone, Default)]
pub struct FlowsCache(Arc<Mutex<HashMap<[u8; 32], std::sync::Weak<tandem_flows::Bot>>>>);

impl FlowsCache {
    /// The flows in `dir`: the copy a tenant with the same files holds, else loaded (and
    /// their model trained) now.
    ///
    /// # Errors
    /// A file cannot be read, or the flows are invalid (each problem with file:line:col).
    fn load(
        &self,
        dir: &Path,
        variables: &BTreeMap<String, String>,
        tenant: &str,
    ) -> anyhow::Result<Arc<tandem_flows::Bot>> {
        let digest = digest_dir(dir)?;
        let cached = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&digest)
            .and_then(std::sync::Weak::upgrade);
        if let Some(bot) = cached {
            return Ok(bot);
        }
        let loaded = tandem_flows::load_dir(dir, variables)
            .map_err(|e| anyhow::anyhow!("the flows in {} are invalid:\n{e}", dir.display()))?;
        for warning in &loaded.warnings {
            tracing::warn!(%tenant, %warning, "flow warning");
        }
        let bot = Arc::new(loaded.bot);
        let mut cache = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        cache.retain(|_, weak| weak.strong_count() > 0);
        cache.insert(digest, Arc::downgrade(&bot));
        Ok(bot)
    }
}

/// A digest of every file under `dir`: relative paths and contents, in path order.
fn digest_dir(dir: &Path) -> anyhow::Result<[u8; 32]> {
    use sha2::{Digest, Sha256};
    let mut files: Vec<PathBuf> = fingerprint(dir).into_iter().map(|(p, _, _)| p).collect();
    files.sort();
    let mut hasher = Sha256::new();
    for file in files {
        let relative = file.strip_prefix(dir).unwrap_or(&file);
        hasher.update(relative.to_string_lossy().as_bytes());
        hasher.update([0]);
        let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    Ok(hasher.finalize().into())
}

impl TenantBuilder {
    /// Builds the tenant of `spec`: loads its flows (training its local model) and makes its
    /// sender and desk.
    ///
    /// # Errors
    /// Its flows are invalid (the error lists each problem with its file, line and column).
    pub fn build(&self, spec: &TenantSpec) -> anyhow::Result<Tenant> {
        let flows = match &spec.flows_dir {
            Some(dir) => Some(FlowsHandle::shared(self.loaded_flows.load(
                dir,
                &self.flow_variables,
                &spec.id,
            )?)),
            None => None,
        };
        let graph = spec
            .access_token
            .as_ref()
            .map(|token| self.graph.with_token(token.clone()));
        let policy = SendPolicy {
            per_second: spec.send_rate,
            max_attempts: self.engine.send_attempts,
            base_backoff: self.engine.send_backoff,
            max_backoff: Duration::from_secs(300),
            recovery: self.engine.send_recovery,
            transcript_cap: self.engine.transcript_cap,
            hold_retry: self.engine.hold_retry,
            authentication_templates: self.engine.authentication_templates.clone(),
        };
        // Without a token the sender still runs: sends fail visibly in the transcript.
        let sender_graph = graph
            .clone()
            .unwrap_or_else(|| self.graph.with_token(SecretString::from(String::new())));
        let sender = Sender::new(
            Arc::clone(&self.store),
            sender_graph,
            flows.clone(),
            policy,
            Arc::clone(&self.clock),
        )
        .with_links(self.links.clone())
        .for_tenant(&spec.id);
        let llm = match &spec.llm {
            TenantLlm::Deployment => self.llm.clone(),
            TenantLlm::Off => None,
            TenantLlm::Own(settings, prompts) => {
                let prompts = if prompts.join("classify.j2").is_file() {
                    prompts
                } else {
                    &self.prompts_dir
                };
                Some(crate::startup::llm_classifier(settings, prompts)?)
            }
        };
        let responder = flows.map(|handle| {
            let mut responder = Responder::new(handle, self.calls.clone());
            if let Some(llm) = llm {
                responder = responder.with_llm(llm);
            }
            if let Some(stage) = &self.semantic {
                // A tenant added or changed by a reload gets its head built at once.
                if tokio::runtime::Handle::try_current().is_ok() {
                    drop(stage.ready(&responder.flows().current()));
                }
                responder = responder.with_semantic(Arc::clone(stage));
            }
            // The audio is downloaded with the tenant's token: without one, no voice notes.
            if let (Some(transcriber), Some(graph)) = (&self.transcriber, &graph) {
                responder = responder.with_voice(tandem_engine::voice::Voice::new(
                    Arc::clone(transcriber),
                    graph.clone(),
                ));
            }
            responder
        });
        let probe = Tenant::new(&spec.id, TenantParts::default(), &self.engine);
        let hooks: Vec<_> = spec
            .hooks
            .iter()
            .cloned()
            .map(|mut h| {
                h.name = probe.hook_name(&h.name);
                h
            })
            .collect();
        let parts = TenantParts {
            numbers: spec.numbers.clone(),
            wabas: spec.wabas.clone(),
            responder,
            sender: Some(sender),
            graph,
            desk: Desk {
                routing: Arc::new(spec.routing.clone()),
                hooks: Arc::new(tandem_handoff::Hooks::new(
                    hooks,
                    self.engine.hook_transcript,
                )),
            },
            reminder: spec.reminder.clone(),
            transcripts_kept: spec.transcripts_kept,
        };
        Ok(Tenant::new(&spec.id, parts, &self.engine))
    }
}

/// Copies the directory `from` (files and subdirectories) to `to`, which must not exist.
fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else {
            std::fs::copy(entry.path(), &dest)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Names, sizes and modification times of every file under `dir`: changes when a file is
/// added, removed or edited.
fn fingerprint(dir: &Path) -> Fingerprint {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
        {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                out.push((entry.path(), meta.len(), meta.modified().ok()));
            }
        }
    }
    out.sort();
    out
}

/// The files of a tenant directory as last looked at.
type Fingerprint = Vec<(PathBuf, u64, Option<std::time::SystemTime>)>;

/// A tenant in force and the files it was built from.
struct Running {
    fingerprint: Fingerprint,
    tenant: Arc<Tenant>,
    tokens: Vec<ApiToken>,
}

impl Running {
    fn again(&self) -> Self {
        Self {
            fingerprint: self.fingerprint.clone(),
            tenant: Arc::clone(&self.tenant),
            tokens: self.tokens.clone(),
        }
    }
}

/// Why a tenant could not be removed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    /// No declared tenant has that id.
    #[error("no such tenant")]
    Unknown,
    /// Its directory could not be moved away.
    #[error("{0:#}")]
    Io(anyhow::Error),
}

/// What one reload did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// Tenants put in force for the first time.
    pub added: Vec<String>,
    /// Tenants rebuilt from changed files.
    pub changed: Vec<String>,
    /// Tenants whose directory is gone.
    pub removed: Vec<String>,
    /// Tenants whose files are invalid (`tenant: error`); the running version stays.
    pub refused: Vec<String>,
}

impl ReloadReport {
    /// True when nothing changed and nothing was refused.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.changed.is_empty()
            && self.removed.is_empty()
            && self.refused.is_empty()
    }
}

/// The declared tenants of a deployment: the directory they are read from and the ones in
/// force.
pub struct Declared {
    dir: PathBuf,
    env: HashMap<String, String>,
    settings: Arc<Settings>,
    builder: TenantBuilder,
    tenants: Tenants,
    tokens: TokenBook,
    /// The deployment's own tokens (every tenant's are added to them).
    deployment_tokens: Vec<ApiToken>,
    running: Mutex<BTreeMap<String, Running>>,
    /// Tenants whose files were refused, with those files: looked at again when they change.
    broken: Mutex<HashMap<String, Fingerprint>>,
}

impl std::fmt::Debug for Declared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Declared")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Declared {
    /// Loads the tenants in `settings.tenants_dir`. A tenant that cannot be loaded is left
    /// out (logged, counted, its webhooks kept as dead letters) so one business's broken
    /// file does not stop the others.
    ///
    /// # Errors
    /// Two tenants claim one number or WABA.
    pub fn start(
        dir: PathBuf,
        env: HashMap<String, String>,
        settings: Arc<Settings>,
        builder: TenantBuilder,
        tokens: TokenBook,
    ) -> anyhow::Result<(Arc<Self>, ReloadReport)> {
        let tenants = Tenants::declared(Vec::new())
            .context("an empty set of tenants")?
            .with_store(Arc::clone(&builder.store));
        let declared = Arc::new(Self {
            dir,
            env,
            deployment_tokens: settings.api_tokens.clone(),
            settings,
            builder,
            tenants,
            tokens,
            running: Mutex::default(),
            broken: Mutex::default(),
        });
        let report = declared.reload().context("loading the tenants")?;
        Ok((declared, report))
    }

    /// The tenants in force.
    pub fn tenants(&self) -> &Tenants {
        &self.tenants
    }

    /// Reads the tenants' directory again and puts what changed in force.
    ///
    /// # Errors
    /// The new set gives one number or WABA to two tenants: nothing changed.
    pub fn reload(&self) -> Result<ReloadReport, tandem_engine::tenants::DirectoryError> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let mut broken = self.broken.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next: BTreeMap<String, Running> = BTreeMap::new();
        let mut report = ReloadReport::default();
        for dir in tenant_dirs(&self.dir) {
            let id = dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            let print = fingerprint(&dir);
            let unchanged = running.get(&id).is_some_and(|old| old.fingerprint == print)
                || broken.get(&id) == Some(&print);
            if unchanged {
                if let Some(old) = running.get(&id) {
                    next.insert(id, old.again());
                }
                continue;
            }
            let built = TenantSpec::load(&dir, &self.env, &self.settings)
                .map_err(anyhow::Error::from)
                .and_then(|spec| Ok((self.builder.build(&spec)?, spec.api_tokens)));
            match built {
                Ok((tenant, tokens)) => {
                    broken.remove(&id);
                    if running.contains_key(&id) {
                        report.changed.push(id.clone());
                    } else {
                        report.added.push(id.clone());
                    }
                    next.insert(
                        id,
                        Running {
                            fingerprint: print,
                            tenant: Arc::new(tenant),
                            tokens,
                        },
                    );
                }
                Err(error) => {
                    ::metrics::counter!(crate::metrics::TENANT_RELOADS, "outcome" => "refused")
                        .increment(1);
                    tracing::error!(tenant = %id, error = %format!("{error:#}"), "tenant not (re)loaded: its running version, if any, stays in force");
                    report.refused.push(format!("{id}: {error:#}"));
                    broken.insert(id.clone(), print);
                    if let Some(old) = running.get(&id) {
                        next.insert(id, old.again());
                    }
                }
            }
        }
        report.removed = running
            .keys()
            .filter(|id| !next.contains_key(*id))
            .cloned()
            .collect();
        self.put_in_force(&next)?;
        *running = next;
        if !(report.added.is_empty() && report.changed.is_empty() && report.removed.is_empty()) {
            ::metrics::counter!(crate::metrics::TENANT_RELOADS, "outcome" => "ok").increment(1);
        }
        ::metrics::gauge!(crate::metrics::TENANTS).set(running.len() as f64);
        Ok(report)
    }

    /// Creates tenant `waba-{waba}` from the template for a WABA no tenant owns (Embedded
    /// Signup shared it: `PARTNER_ADDED`) and puts it in force. The directory is written
    /// under a hidden name and renamed, so no reload sees half of it; a WABA whose directory
    /// exists already is left alone. Answers the new tenant's id, `None` when nothing was
    /// created.
    ///
    /// # Errors
    /// The template cannot be copied, or the new set of tenants is refused.
    pub fn create_for_waba(&self, waba: &str) -> anyhow::Result<Option<String>> {
        if waba.is_empty() || !waba.bytes().all(|b| b.is_ascii_digit()) {
            anyhow::bail!("{waba:?} is not a WABA id");
        }
        if self
            .tenants
            .all()
            .iter()
            .any(|t| t.wabas.iter().any(|w| w == waba))
        {
            return Ok(None);
        }
        let id = format!("waba-{waba}");
        let target = self.dir.join(&id);
        if target.exists() {
            return Ok(None);
        }
        let work = self.dir.join(format!(".{id}.new"));
        if work.exists() {
            std::fs::remove_dir_all(&work)
                .with_context(|| format!("clearing {}", work.display()))?;
        }
        copy_dir(&self.dir.join(TEMPLATE), &work)?;
        let file = work.join(FILE);
        let template = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        std::fs::write(&file, format!("# Created for WABA {waba} (PARTNER_ADDED) from {TEMPLATE}.\nwabas = [\"{waba}\"]\n{template}"))
            .with_context(|| format!("writing {}", file.display()))?;
        std::fs::rename(&work, &target)
            .with_context(|| format!("moving {} into place", target.display()))?;
        ::metrics::counter!(crate::metrics::TENANTS_CREATED).increment(1);
        self.reload()?;
        Ok(Some(id))
    }

    /// Puts `running` in force: the directory of tenants and the API tokens (the
    /// deployment's and every tenant's).
    fn put_in_force(
        &self,
        running: &BTreeMap<String, Running>,
    ) -> Result<(), tandem_engine::tenants::DirectoryError> {
        self.tenants
            .replace(running.values().map(|r| Arc::clone(&r.tenant)).collect())?;
        let mut tokens = self.deployment_tokens.clone();
        tokens.extend(running.values().flat_map(|r| r.tokens.iter().cloned()));
        self.tokens.replace(tokens);
        Ok(())
    }

    /// Removes tenant `id`: it stops owning its numbers and WABAs at once (its hook targets
    /// stay reachable for the deliveries about its erasure) and its directory is moved to
    /// `.removed/{id}-{ms}`, so no reload brings it back. Answers the removed tenant, whose
    /// customers the caller then erases.
    ///
    /// # Errors
    /// No such tenant, or its directory cannot be moved (nothing changed).
    pub fn remove(&self, id: &str) -> Result<Arc<Tenant>, RemoveError> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let tenant = running
            .get(id)
            .map(|r| Arc::clone(&r.tenant))
            .ok_or(RemoveError::Unknown)?;
        let shelf = self.dir.join(".removed");
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        std::fs::create_dir_all(&shelf)
            .and_then(|()| std::fs::rename(self.dir.join(id), shelf.join(format!("{id}-{stamp}"))))
            .map_err(|e| {
                RemoveError::Io(
                    anyhow::Error::from(e).context(format!("moving tenants/{id} to .removed/")),
                )
            })?;
        running.remove(id);
        self.tenants.retire(Arc::clone(&tenant));
        // Removing a tenant cannot make two claim one number.
        if let Err(error) = self.put_in_force(&running) {
            tracing::error!(%error, "the tenants after a removal were refused");
        }
        ::metrics::gauge!(crate::metrics::TENANTS).set(running.len() as f64);
        Ok(tenant)
    }

    /// Reloads on SIGHUP and when a file under the tenants' directory changes.
    pub fn watch(self: &Arc<Self>, every: Duration) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut triggers = crate::startup::ReloadTriggers::new(every);
            while triggers.next().await.is_some() {
                let me = Arc::clone(&this);
                // Building a tenant trains its model: off the async workers.
                let outcome = tokio::task::spawn_blocking(move || me.reload()).await;
                match outcome {
                    Ok(Ok(report)) if report.is_empty() => {}
                    Ok(Ok(report)) => {
                        tracing::info!(added = ?report.added, changed = ?report.changed, removed = ?report.removed, refused = report.refused.len(), "tenants reloaded")
                    }
                    Ok(Err(error)) => {
                        ::metrics::counter!(crate::metrics::TENANT_RELOADS, "outcome" => "refused")
                            .increment(1);
                        tracing::error!(%error, "tenants not reloaded: the tenants in force stay");
                    }
                    Err(error) => tracing::error!(%error, "the tenant reload stopped"),
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy_shipped(to: &Path, address: &str) {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../flows");
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(shipped).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path)
                    .unwrap()
                    .replace("Rua das Flores 12", address);
                std::fs::write(to.join(path.file_name().unwrap()), text).unwrap();
            }
        }
    }

    #[test]
    fn tenants_with_identical_flows_share_one_copy() {
        let root = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            root.path().join("a"),
            root.path().join("b"),
            root.path().join("c"),
        );
        copy_shipped(&a, "Same Street 1");
        copy_shipped(&b, "Same Street 1");
        copy_shipped(&c, "Other Street 2");
        let cache = FlowsCache::default();
        let vars = BTreeMap::new();
        let first = cache.load(&a, &vars, "a").unwrap();
        let same = cache.load(&b, &vars, "b").unwrap();
        let other = cache.load(&c, &vars, "c").unwrap();
        assert!(Arc::ptr_eq(&first, &same), "identical files: one copy");
        assert!(!Arc::ptr_eq(&first, &other), "different files: their own");
        // A tenant whose files change to another's shares that one's copy.
        drop((first, same));
        std::fs::write(
            a.join("hours.yaml"),
            std::fs::read(c.join("hours.yaml")).unwrap(),
        )
        .unwrap();
        let changed = cache.load(&a, &vars, "a").unwrap();
        assert!(Arc::ptr_eq(&changed, &other));
        // Copies nobody holds are forgotten.
        drop((changed, other));
        let _fresh = cache.load(&b, &vars, "b").unwrap();
        assert_eq!(cache.0.lock().unwrap().len(), 1);
    }
}
