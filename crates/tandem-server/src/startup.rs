//! Building and running the application: store, engine, listener, routes, shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::SecretString;
use tandem_domain::{Clock, SystemClock};
use tandem_engine::{Dispatcher, FlowsHandle, HookSender, Ingress, LaneParts, Tenants};
use tandem_store::Store;
use tandem_whatsapp::GraphClient;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

use crate::config::Settings;
use crate::routes::auth::TokenBook;
use crate::routes::{AppState, health, openapi, webhook};
use crate::tenants::{Declared, TenantBuilder, TenantSpec};

/// A built server: the store is open, the engine runs and the listener is bound.
pub struct Application {
    listener: TcpListener,
    router: Router,
    dispatcher: Dispatcher,
    settings: Settings,
}

/// What `/readyz`, `GET /v1/numbers` and the start-up log say without an access token.
const NO_ACCESS_TOKEN: &str =
    "no TANDEM_ACCESS_TOKEN: events are stored, but no reply or agent message can be sent";

/// Builds the router over a state. Exposed so tests can serve it without a real socket.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let v1 = openapi::v1_router(&state);
    Router::new()
        .route("/openapi.json", get(openapi::serve))
        .route("/webhook", get(webhook::handshake).post(webhook::receive))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .nest("/v1", v1)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::map_response(crate::error::json_errors))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &axum::extract::Request| {
                // The path names customers (a phone, a BSUID): logs get a digest instead.
                let path = crate::routes::privacy::loggable_path(request.uri().path());
                tracing::debug_span!("request", method = %request.method(), %path)
            }),
        )
        .with_state(state)
}

impl Application {
    /// Opens the store, starts the engine and binds the listener.
    ///
    /// # Errors
    /// Fails when the store cannot be opened or the address cannot be bound.
    pub async fn build(
        settings: Settings,
        metrics: Option<PrometheusHandle>,
    ) -> anyhow::Result<Self> {
        let store: Arc<dyn Store> = tandem_store::open(&settings.store_url, settings.store.clone())
            .await
            .with_context(|| format!("opening the store {}", redact(&settings.store_url)))?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        if settings.access_token.is_none() && settings.tenants_dir.is_none() {
            tracing::warn!("{NO_ACCESS_TOKEN}; set it (or TANDEM_ACCESS_TOKEN_FILE) to send");
        }
        let graph = GraphClient::new(
            &settings.graph_url,
            settings
                .access_token
                .clone()
                .unwrap_or_else(|| SecretString::from(String::new())),
            settings.send_timeout,
        )
        .context("building the Graph API client")?;
        let llm = match &settings.llm {
            Some(llm) => Some(llm_classifier(llm, &settings.prompts_dir)?),
            None => None,
        };
        let semantic = match &settings.embedder {
            Some(e) => Some(Arc::new(tandem_engine::semantic::SemanticStage::new(
                embedder(e)?,
                Arc::clone(&store),
                e.options.clone(),
            ))),
            None => None,
        };
        let transcriber = settings.transcriber.as_ref().map(|t| {
            tracing::info!(base_url = %t.base_url, model = %t.model, "voice notes transcribed");
            Arc::new(tandem_classify::transcribe::Transcriber::new(
                tandem_classify::transcribe::TranscribeConfig {
                    api_key: t.api_key.clone().unwrap_or_default(),
                    timeout: t.timeout,
                    language: t.language.clone(),
                    ..tandem_classify::transcribe::TranscribeConfig::new(&t.base_url, &t.model)
                },
            ))
        });
        let links = tandem_engine::sender::LinkCache::default();
        let builder = TenantBuilder {
            semantic: semantic.clone(),
            transcriber,
            store: Arc::clone(&store),
            clock: Arc::clone(&clock),
            graph: graph.clone(),
            engine: settings.engine.clone(),
            flow_variables: settings.flow_variables.clone(),
            llm,
            prompts_dir: settings.prompts_dir.clone(),
            calls: tandem_engine::responder::call_client()
                .context("building the HTTP client of call steps")?,
            links: links.clone(),
            loaded_flows: crate::tenants::FlowsCache::default(),
        };
        let api_tokens = TokenBook::new(settings.api_tokens.clone());
        let (tenants, declared) = match settings.tenants_dir.clone() {
            Some(dir) => {
                let (declared, report) = Declared::start(
                    dir.clone(),
                    std::env::vars().collect(),
                    Arc::new(settings.clone()),
                    builder.clone(),
                    api_tokens.clone(),
                )?;
                tracing::info!(dir = %dir.display(), tenants = report.added.len(), refused = report.refused.len(), "tenants loaded");
                for refused in &report.refused {
                    tracing::error!(tenant = %refused, "a tenant could not be loaded: its webhooks are kept as dead letters until it is fixed");
                }
                declared.watch(FLOWS_POLL);
                (declared.tenants().clone(), Some(declared))
            }
            None => {
                let spec = TenantSpec::implicit(&settings);
                let tenant = builder.build(&spec)?;
                match (&spec.flows_dir, tenant.responder.as_ref()) {
                    (Some(dir), Some(responder)) => {
                        tracing::info!(dir = %dir.display(), flows = responder.flows().current().flows.len(), "flows loaded");
                        spawn_reload_on_sighup(
                            responder.clone(),
                            dir.clone(),
                            settings.flow_variables.clone(),
                        );
                    }
                    _ => tracing::warn!(
                        "no flows directory: events are recorded but the bot does not answer"
                    ),
                }
                (Tenants::single(tenant).with_store(Arc::clone(&store)), None)
            }
        };
        prepare_semantic(&tenants).await;
        let ingress = Ingress::new(
            Arc::clone(&store),
            tenants.clone(),
            Arc::new(tandem_domain::PauseRules::new(
                settings.engine.human_idle,
                tandem_handoff::RoutingConfig::default().takeover_cap,
            )),
        );
        let ingress = match &declared {
            Some(declared) if settings.tenants_auto_create => {
                ingress.with_account_listener(partner_added_listener(Arc::clone(declared)))
            }
            _ => ingress,
        };
        let hook_sender = HookSender::new(
            Arc::clone(&store),
            tenants.clone(),
            tandem_engine::hook_sender::client().context("building the HTTP client of hooks")?,
            Arc::clone(&clock),
            settings.engine.clone(),
        )
        .with_replies(ingress.clone());
        let dispatcher = Dispatcher::start(
            Arc::clone(&store),
            settings.engine.clone(),
            Arc::clone(&clock),
            LaneParts {
                tenants: tenants.clone(),
                hooks_ready: Arc::default(),
                routing_ready: Arc::default(),
                monitor: Some(Arc::new(
                    tandem_engine::health::Monitor::new(
                        Arc::clone(&store),
                        tenants.clone(),
                        Arc::clone(&clock),
                        settings.health.clone(),
                    )
                    .with_links(links),
                )),
                hook_sender: Some(hook_sender),
            },
        );
        let state = AppState {
            ingress,
            store,
            clock,
            app_secret: settings.app_secret_bytes().map(Arc::from),
            verify_token: settings.verify_token.clone().map(Arc::new),
            api_tokens,
            api_limiter: std::num::NonZeroU32::new(settings.api_rate_limit).map(|rate| {
                Arc::new(governor::RateLimiter::keyed(governor::Quota::per_second(
                    rate,
                )))
            }),
            tenants,
            declared,
            onboarding: Arc::new(crate::routes::Onboarding {
                graph,
                app_id: settings.app_id.clone(),
                app_secret: settings.app_secret.clone(),
            }),
            send_rate: settings.engine.send_rate,
            sending_problem: (settings.access_token.is_none() && settings.tenants_dir.is_none())
                .then_some(NO_ACCESS_TOKEN),
            authentication_templates: Arc::new(settings.engine.authentication_templates.clone()),
            metrics,
        };
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        let router = router(state, settings.max_body_bytes);
        Ok(Self {
            listener,
            router,
            dispatcher,
            settings,
        })
    }

    /// Returns the bound address (the real port when 0 was asked for).
    ///
    /// # Errors
    /// Fails when the socket has no local address.
    pub fn addr(&self) -> anyhow::Result<SocketAddr> {
        self.listener
            .local_addr()
            .context("reading the bound address")
    }

    /// Serves until `shutdown` resolves, then stops the engine within the grace period.
    ///
    /// # Errors
    /// Fails when the server stops on an IO error.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let served = crate::serve::serve(
            self.listener,
            self.router,
            self.settings.connection_limits,
            self.settings.shutdown_grace,
            shutdown,
        )
        .await;
        self.dispatcher.shutdown(self.settings.shutdown_grace).await;
        served.context("serving HTTP")
    }
}

/// Creates a tenant from the template when Embedded Signup shares a WABA no tenant owns
/// (`PARTNER_ADDED`), off the webhook's path.
fn partner_added_listener(declared: Arc<Declared>) -> tandem_engine::ingress::AccountListener {
    tandem_engine::ingress::AccountListener(Arc::new(move |update| {
        if update.event != "PARTNER_ADDED" {
            return;
        }
        let waba = update
            .raw
            .pointer("/waba_info/waba_id")
            .and_then(|w| w.as_str())
            .unwrap_or(&update.account)
            .to_owned();
        let declared = Arc::clone(&declared);
        tokio::task::spawn_blocking(move || match declared.create_for_waba(&waba) {
            Ok(Some(id)) => {
                tracing::info!(tenant = %id, %waba, "tenant created for a WABA shared through Embedded Signup")
            }
            Ok(None) => tracing::debug!(%waba, "PARTNER_ADDED for a WABA a tenant owns already"),
            Err(error) => {
                tracing::error!(%waba, error = %format!("{error:#}"), "no tenant could be created for a shared WABA")
            }
        });
    }))
}

/// Builds the LLM stage from its settings and `prompts_dir/classify.j2` (plus
/// `handoff_summary.j2` when present).
///
/// # Errors
/// A prompt that cannot be read or compiled, or a client that cannot be built.
pub fn llm_classifier(
    llm: &crate::config::LlmSettings,
    prompts_dir: &std::path::Path,
) -> anyhow::Result<Arc<tandem_classify::llm::LlmClassifier>> {
    let path = prompts_dir.join("classify.j2");
    let prompt = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the classifier prompt {}", path.display()))?;
    let mut config = tandem_classify::llm::LlmConfig::new(&llm.base_url, &llm.model);
    if let Some(key) = &llm.api_key {
        config.api_key = key.clone();
    }
    config.timeout = llm.timeout;
    config.structured_output = llm.structured_output;
    config.concurrency = llm.concurrency;
    let mut classifier = tandem_classify::llm::LlmClassifier::new(config, prompt)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    // The handoff summary is optional: without its prompt, hooks carry no summary.
    let summary = prompts_dir.join("handoff_summary.j2");
    if summary.exists() {
        let prompt = std::fs::read_to_string(&summary)
            .with_context(|| format!("reading the handoff summary prompt {}", summary.display()))?;
        classifier = classifier
            .with_summary_prompt(prompt)
            .map_err(|e| anyhow::anyhow!("{}: {e}", summary.display()))?;
    }
    // The slot extraction is optional too: without its prompt, refused answers are refused.
    let extract = prompts_dir.join("extract_slot.j2");
    if extract.exists() {
        let prompt = std::fs::read_to_string(&extract)
            .with_context(|| format!("reading the slot extraction prompt {}", extract.display()))?;
        classifier = classifier
            .with_extract_prompt(prompt)
            .map_err(|e| anyhow::anyhow!("{}: {e}", extract.display()))?;
    }
    tracing::info!(base_url = %llm.base_url, model = %llm.model, summary = summary.exists(), extract = extract.exists(), "LLM stage on");
    Ok(Arc::new(classifier))
}

/// Builds the semantic stage's embedder: the in-process model (feature `semantic`) or an
/// embeddings endpoint client.
///
/// # Errors
/// The model folder cannot be loaded, or this build has no in-process embedder.
pub fn embedder(
    settings: &crate::config::EmbedderSettings,
) -> anyhow::Result<Arc<dyn tandem_classify::embed::Embedder>> {
    match &settings.source {
        crate::config::EmbedderSource::Endpoint { base_url, model } => {
            let mut config = tandem_classify::embed::EmbedConfig::new(base_url, model);
            config.timeout = settings.timeout;
            config.prefix = settings.prefix.clone();
            if let Some(key) = &settings.api_key {
                config.api_key = key.clone();
            }
            tracing::info!(%base_url, %model, "semantic stage on, embeddings endpoint");
            Ok(Arc::new(tandem_classify::embed::EndpointEmbedder::new(
                config,
            )))
        }
        #[cfg(feature = "semantic")]
        crate::config::EmbedderSource::Local(dir) => {
            let options = tandem_classify::local_embed::LocalOptions {
                prefix: settings.prefix.clone(),
                timeout: settings.timeout,
                ..tandem_classify::local_embed::LocalOptions::default()
            };
            let embedder = tandem_classify::local_embed::LocalEmbedder::load(dir, options)?;
            tracing::info!(model = %dir.display(), pooling = ?embedder.pooling(), "semantic stage on, in-process model");
            Ok(Arc::new(embedder))
        }
        #[cfg(not(feature = "semantic"))]
        crate::config::EmbedderSource::Local(dir) => anyhow::bail!(
            "TANDEM_EMBEDDER={}: this build has no in-process embedder; build with `--features semantic`, or give an embeddings endpoint URL",
            dir.display()
        ),
    }
}

/// Builds every tenant's semantic head before the server answers (each distinct flows
/// once); a failure is logged and the stage is tried again later.
async fn prepare_semantic(tenants: &Tenants) {
    for tenant in tenants.all() {
        let Some(responder) = &tenant.responder else {
            continue;
        };
        let Some(stage) = responder.semantic() else {
            continue;
        };
        if let Err(error) = stage.prepare(&responder.flows().current()).await {
            tracing::error!(tenant = %tenant.id, %error, "semantic stage not ready at start-up");
        }
    }
}

/// How often the flows directory is looked at for changes.
const FLOWS_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// Reloads the flows on SIGHUP and when a file in the directory changes; invalid new flows
/// are reported and the running ones kept.
fn spawn_reload_on_sighup(
    responder: tandem_engine::Responder,
    dir: std::path::PathBuf,
    variables: std::collections::BTreeMap<String, String>,
) {
    let watched_dir = dir.clone();
    let dir_fingerprint = move || fingerprint(&watched_dir);
    let reload_now = move |why: &str, responder: &tandem_engine::Responder| match reload(
        responder.flows(),
        &dir,
        &variables,
    ) {
        Ok(count) => {
            ::metrics::counter!(crate::metrics::FLOW_RELOADS, "outcome" => "ok").increment(1);
            tracing::info!(flows = count, why, "flows reloaded");
            // The new examples' head is built now rather than at the first unsure message.
            if let Some(stage) = responder.semantic() {
                drop(stage.ready(&responder.flows().current()));
            }
        }
        Err(error) => {
            ::metrics::counter!(crate::metrics::FLOW_RELOADS, "outcome" => "refused").increment(1);
            tracing::error!(why, %error, "flows not reloaded: the running flows stay in force");
        }
    };
    let watched = responder;
    tokio::spawn(async move {
        let mut triggers = ReloadTriggers::new(FLOWS_POLL);
        let mut last = dir_fingerprint();
        while let Some(trigger) = triggers.next().await {
            match trigger {
                Trigger::Hangup => {
                    last = dir_fingerprint();
                    reload_now("SIGHUP", &watched);
                }
                Trigger::Tick => {
                    let now = dir_fingerprint();
                    if now != last {
                        last = now;
                        reload_now("file change", &watched);
                    }
                }
            }
        }
    });
}

/// What asks for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// The process got SIGHUP.
    Hangup,
    /// The polling interval passed: look for changed files.
    Tick,
}

/// SIGHUP and a polling interval, the two reasons to look at configuration files again.
pub(crate) struct ReloadTriggers {
    #[cfg(unix)]
    hangups: Option<tokio::signal::unix::Signal>,
    tick: tokio::time::Interval,
}

impl ReloadTriggers {
    /// Listens for SIGHUP (where it can) and ticks every `every`.
    pub(crate) fn new(every: std::time::Duration) -> Self {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            #[cfg(unix)]
            hangups: {
                use tokio::signal::unix::{SignalKind, signal};
                match signal(SignalKind::hangup()) {
                    Ok(s) => Some(s),
                    Err(error) => {
                        tracing::warn!(%error, "cannot listen for SIGHUP; reloads happen on file changes only");
                        None
                    }
                }
            },
            tick,
        }
    }

    /// The next trigger; `None` once signals can no longer arrive (the runtime is stopping).
    pub(crate) async fn next(&mut self) -> Option<Trigger> {
        #[cfg(unix)]
        let hangup = async {
            match self.hangups.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<Option<()>>();
        tokio::select! {
            got = hangup => got.map(|()| Trigger::Hangup),
            _ = self.tick.tick() => Some(Trigger::Tick),
        }
    }
}

/// Names, sizes and modification times of the YAML files in `dir`: changes when a flow file
/// is added, removed or edited.
fn fingerprint(
    dir: &std::path::Path,
) -> Vec<(std::path::PathBuf, u64, Option<std::time::SystemTime>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| {
            e.path()
                .extension()
                .is_some_and(|x| x == "yaml" || x == "yml")
        })
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((e.path(), meta.len(), meta.modified().ok()))
        })
        .collect();
    files.sort();
    files
}

/// Loads the flows in `dir` and puts them in force when they are valid; returns how many.
///
/// # Errors
/// The load error; the flows in force are unchanged.
pub fn reload(
    handle: &FlowsHandle,
    dir: &std::path::Path,
    variables: &std::collections::BTreeMap<String, String>,
) -> Result<usize, tandem_flows::LoadError> {
    let loaded = tandem_flows::load_dir(dir, variables)?;
    let count = loaded.bot.flows.len();
    handle.replace(loaded.bot);
    Ok(count)
}

/// Hides a password in a Redis URL before it is logged.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::redact("redis://:pw@host:6379"),
            "redis://***@host:6379"
        );
        assert_eq!(super::redact("data/tandem.redb"), "data/tandem.redb");
    }
}
