//! The `tandem` command: `serve` runs the server; `check` validates the configuration and
//! the flows; `schema` prints the flows' JSON Schema; `test` runs conversation tests; `chat`
//! talks to the flows in the terminal; `replay` posts recorded webhooks to a server, signed.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tandem_server::{Application, CliOverrides, telemetry};

mod chat;
mod convtest;

// mimalloc: the request path allocates many small, short-lived values (JSON, keys, events);
// it measured faster than the system allocator under load (docs/PERFORMANCE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for a configuration error (EX_CONFIG-style usage error, as in sysexits.h).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "tandem",
    version,
    about = "Bot-and-human engine for WhatsApp Coexistence numbers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: webhook, engine, agent API, health and metrics.
    Serve(ConfigArgs),
    /// Validate the configuration and the flows in DIR (default: ./flows) and exit: 0 when
    /// valid, 1 when the flows have errors (each with file:line:col), 64 for configuration.
    Check(CheckArgs),
    /// Print the JSON Schema of flow files and bot.yaml, for editors.
    Schema,
    /// Run the conversation tests of a project (DIR/tests/conversations/*.yaml against
    /// DIR/flows); exit 1 when one fails, with a readable difference.
    Test(TestArgs),
    /// Talk to the flows in the terminal, with no WhatsApp account.
    Chat(ChatArgs),
    /// Evaluate the intent classifier on labelled JSONL (`{"text", "intent"}`, `oos` for
    /// out of scope): accuracy, macro-F1, out-of-scope precision and recall, stage shares,
    /// latency.
    Eval(EvalArgs),
    /// Post recorded webhook bodies to a server, signed as Meta signs them.
    Replay(ReplayArgs),
    /// Business numbers of a running server.
    #[command(subcommand)]
    Numbers(NumbersCommand),
}

#[derive(Subcommand)]
enum NumbersCommand {
    /// Onboard a number through the running server (`POST /v1/numbers`): check the token,
    /// subscribe the app to the account's webhooks and, for a Coexistence number, request
    /// the contacts and history syncs (once each). Prints the number's view.
    Add(NumbersAddArgs),
}

#[derive(Args)]
struct NumbersAddArgs {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An API token with the `admin` scope.
    #[arg(long, env = "TANDEM_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// The number's phone number id.
    #[arg(long)]
    phone_number_id: String,
    /// Its WhatsApp Business Account id.
    #[arg(long)]
    waba_id: String,
    /// The business's token (default: the server's TANDEM_ACCESS_TOKEN).
    #[arg(
        long,
        env = "TANDEM_BUSINESS_TOKEN",
        hide_env_values = true,
        conflicts_with = "code"
    )]
    business_token: Option<String>,
    /// An Embedded Signup code to exchange for the business's token (the server needs
    /// TANDEM_APP_ID).
    #[arg(long)]
    code: Option<String>,
    /// Say whether the number is shared with the Business App (default: as Meta reports).
    #[arg(long)]
    coexistence: Option<bool>,
}

#[derive(Args)]
struct ReplayArgs {
    /// Webhook URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8080/webhook")]
    url: String,
    /// Sign with this app secret (default: $TANDEM_APP_SECRET; unsigned when neither is set).
    #[arg(long, env = "TANDEM_APP_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Files holding webhook bodies (JSON as Meta posts it), sent in the order given.
    #[arg(required_unless_present = "text")]
    files: Vec<PathBuf>,
    /// Set every `timestamp` in the files to now (recorded payloads are old, and a customer
    /// message older than 24 hours may only be answered with a template).
    #[arg(long)]
    now: bool,
    /// Instead of files: send customer text messages, written now, one per --text.
    #[arg(long)]
    text: Vec<String>,
    /// The customer of --text messages: a phone number, or a business-scoped user ID
    /// (`US.1349…`) to play a customer with a username and no phone.
    #[arg(long, default_value = "15550002222")]
    from: String,
    /// The business number of --text messages.
    #[arg(long, default_value = "106540000000001")]
    phone_number_id: String,
}

#[derive(Args)]
struct TestArgs {
    /// The project directory (default: the current one).
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// The flows directory (default: DIR/flows).
    #[arg(long)]
    flows: Option<PathBuf>,
    /// A test file or a directory of them (default: DIR/tests/conversations).
    #[arg(long)]
    tests: Option<PathBuf>,
}

#[derive(Args)]
struct EvalArgs {
    /// The labelled messages to classify.
    #[arg(long)]
    data: PathBuf,
    /// Train on these labelled messages (`oos` lines are skipped) instead of the flows'
    /// examples.
    #[arg(long)]
    train: Option<PathBuf>,
    /// The flows whose examples train the model when --train is not given.
    #[arg(long, default_value = "flows")]
    flows: PathBuf,
    /// The local stage answers alone at this confidence or above.
    #[arg(long, default_value_t = tandem_classify::DEFAULT_THRESHOLD)]
    threshold: f32,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Training passes (default: the built-in setting).
    #[arg(long)]
    epochs: Option<usize>,
    /// First step size of training.
    #[arg(long)]
    learning_rate: Option<f32>,
    /// Language of the --train data, for word stems (with the flows: their `languages`).
    #[arg(long, default_value = "en")]
    language: String,
    /// With --train, do not learn the intents' names as examples (flows learn their ids).
    #[arg(long)]
    no_names: bool,
    /// Ask the LLM about the messages the local stage is unsure of, as the server does
    /// (TANDEM_LLM_BASE_URL, TANDEM_LLM_MODEL, TANDEM_LLM_API_KEY; prompts/classify.j2).
    #[arg(long)]
    llm: bool,
    /// Also show the local stage's coverage, precision and out-of-scope recall at thresholds
    /// from 0.3 to 0.95, to choose `classifier_threshold`.
    #[arg(long)]
    sweep: bool,
    #[command(flatten)]
    semantic: EmbedderArgs,
}

/// The semantic stage's embedder, for `tandem eval` and `tandem chat`.
#[derive(Args)]
struct EmbedderArgs {
    /// Run the semantic stage with this embedder: a sentence-transformers model folder
    /// (builds with `--features semantic`) or an embeddings endpoint URL (`…/v1`; model from
    /// --embedder-model or TANDEM_EMBEDDER_MODEL). TANDEM_EMBEDDER_PREFIX and
    /// TANDEM_SEMANTIC_* apply as in the server.
    #[arg(long)]
    embedder: Option<String>,
    /// The endpoint's model name, with an --embedder URL.
    #[arg(long)]
    embedder_model: Option<String>,
}

impl EmbedderArgs {
    /// The embedder settings of these flags and `env` (as the server reads them; a call may
    /// take `timeout` unless TANDEM_EMBEDDER_TIMEOUT says otherwise); `None` without
    /// --embedder.
    fn settings(
        &self,
        env: &HashMap<String, String>,
        timeout: &str,
    ) -> anyhow::Result<Option<tandem_server::config::EmbedderSettings>> {
        let Some(source) = &self.embedder else {
            return Ok(None);
        };
        let mut env = env.clone();
        env.insert("TANDEM_EMBEDDER".into(), source.clone());
        if let Some(name) = &self.embedder_model {
            env.insert("TANDEM_EMBEDDER_MODEL".into(), name.clone());
        }
        env.entry("TANDEM_EMBEDDER_TIMEOUT".into())
            .or_insert_with(|| timeout.to_owned());
        let overrides = CliOverrides {
            dev: true,
            ..CliOverrides::default()
        };
        let settings =
            tandem_server::config::load(&overrides, &env).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(settings.embedder)
    }
}

/// The thresholds `tandem eval --sweep` reports.
const SWEEP_THRESHOLDS: [f32; 9] = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95];

#[derive(Args)]
struct ChatArgs {
    /// The flows directory.
    #[arg(default_value = "flows")]
    dir: PathBuf,
    /// The customer's name as the business's address book has it.
    #[arg(long)]
    contact: Option<String>,
    #[command(flatten)]
    semantic: EmbedderArgs,
}

#[derive(Args)]
struct CheckArgs {
    /// The flows directory to check (default: the configured one, else ./flows).
    dir: Option<PathBuf>,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Args)]
struct ConfigArgs {
    /// Configuration file (TOML); defaults to ./tandem.toml when it exists.
    #[arg(long, env = "TANDEM_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on, such as 127.0.0.1:8080 (port 0 picks a free port).
    #[arg(long)]
    listen: Option<String>,
    /// Store: a file path for the embedded store, or a redis:// URL.
    #[arg(long)]
    store: Option<String>,
    /// Run without Meta credentials; webhook signatures are NOT checked.
    #[arg(long)]
    dev: bool,
    /// The flows directory (default: ./flows when it exists).
    #[arg(long)]
    flows: Option<PathBuf>,
}

impl ConfigArgs {
    fn overrides(&self) -> CliOverrides {
        CliOverrides {
            config: self.config.clone(),
            listen: self.listen.clone(),
            store: self.store.clone(),
            dev: self.dev,
            flows: self.flows.clone(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env: HashMap<String, String> = std::env::vars().collect();
    let (args, serve) = match &cli.command {
        Command::Serve(args) => (args, true),
        Command::Check(args) => return check(args, &env),
        Command::Test(args) => {
            let flows = args.flows.clone().unwrap_or_else(|| args.dir.join("flows"));
            let tests = args
                .tests
                .clone()
                .unwrap_or_else(|| args.dir.join("tests/conversations"));
            return match convtest::run(&flows, &tests, &tandem_server::config::flow_variables(&env))
            {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(error) => {
                    eprintln!("tandem: {error:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Eval(args) => {
            return match eval(args, &env) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("tandem: {error:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Chat(args) => {
            let semantic = match args.semantic.settings(&env, "5s") {
                Ok(settings) => settings,
                Err(error) => {
                    eprintln!("tandem: {error:#}");
                    return ExitCode::from(64);
                }
            };
            return match chat::run(
                &args.dir,
                &tandem_server::config::flow_variables(&env),
                args.contact.clone(),
                semantic.as_ref(),
            ) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("tandem: {error:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Schema => {
            let schema = tandem_flows::schema();
            let mut out = std::io::stdout().lock();
            let written = serde_json::to_writer_pretty(&mut out, &schema)
                .map_err(std::io::Error::from)
                .and_then(|()| writeln!(out));
            return if written.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
        Command::Numbers(NumbersCommand::Add(args)) => return exit_code(numbers_add(args)),
        Command::Replay(args) => return exit_code(replay(args)),
    };
    let settings = match tandem_server::load(&args.overrides(), &env) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("tandem: configuration error: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    debug_assert!(serve);
    match run(settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tandem: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `tandem eval`: trains the local model and reports on labelled data.
fn eval(args: &EvalArgs, env: &HashMap<String, String>) -> anyhow::Result<()> {
    let read = |path: &PathBuf| -> anyhow::Result<Vec<tandem_classify::Example>> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        tandem_classify::eval::read_jsonl(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    };
    let mut options = tandem_classify::TrainOptions::default();
    let training: Vec<tandem_classify::Example> = match &args.train {
        Some(path) => {
            let mut examples: Vec<tandem_classify::Example> = read(path)?
                .into_iter()
                .filter(|e| e.intent != tandem_classify::eval::OUT_OF_SCOPE)
                .collect();
            if !args.no_names {
                let mut intents: Vec<String> = examples.iter().map(|e| e.intent.clone()).collect();
                intents.sort();
                intents.dedup();
                examples.extend(
                    intents
                        .iter()
                        .map(|i| tandem_classify::Example::from_name(i)),
                );
            }
            options.languages = vec![args.language.clone()];
            examples
        }
        None => {
            let loaded =
                tandem_flows::load_dir(&args.flows, &tandem_server::config::flow_variables(env))
                    .map_err(|e| anyhow::anyhow!("the flows are invalid:\n{e}"))?;
            options.languages = loaded.bot.settings.languages.clone();
            loaded.bot.training_examples()
        }
    };
    let data = read(&args.data)?;
    let started = std::time::Instant::now();
    options.epochs = args.epochs.unwrap_or(options.epochs);
    options.learning_rate = args.learning_rate.unwrap_or(options.learning_rate);
    let model = tandem_classify::Model::train(&training, options)?;
    let train_ms = started.elapsed().as_secs_f64() * 1e3;
    let mut run = tandem_classify::eval::run_local(&model, &data, args.threshold);
    // Evaluation waits as long as the embedder needs: latency is measured, not bounded.
    let semantic = match args.semantic.settings(env, "60s")? {
        Some(settings) => Some(eval_semantic(
            &settings,
            args.threshold,
            &training,
            &data,
            &model,
            &mut run,
        )?),
        None => None,
    };
    let llm = if args.llm {
        Some(ask_llm(&mut run, &data, &training, env)?)
    } else {
        None
    };
    let llm_calls = llm.as_ref().map_or(0, |l| l.calls);
    let mut report = tandem_classify::eval::report(&data, &run, args.threshold, llm_calls);
    let semantic = semantic.map(|mut s| {
        s.share = report.stage_share.get("semantic").copied().unwrap_or(0.0);
        s.precision = report
            .stage_precision
            .get("semantic")
            .copied()
            .unwrap_or(0.0);
        report.threshold = args.threshold.max(s.lexical_threshold);
        s
    });
    let sweep = args
        .sweep
        .then(|| tandem_classify::eval::sweep(&data, &run, &SWEEP_THRESHOLDS));
    let mut out = std::io::stdout().lock();
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["train_examples"] = training.len().into();
        value["intents"] = model.intents().len().into();
        value["train_ms"] = train_ms.into();
        if let Some(sweep) = &sweep {
            value["sweep"] = serde_json::to_value(sweep)?;
        }
        if let Some(semantic) = &semantic {
            value["semantic"] = serde_json::to_value(semantic)?;
        }
        if let Some(llm) = &llm {
            value["llm"] = serde_json::json!({
                "json_mode": llm.json_mode,
                "failures": llm.failures,
                "rejections": llm.rejections,
            });
        }
        writeln!(out, "{value}")?;
    } else {
        writeln!(
            out,
            "trained on {} examples of {} intents in {train_ms:.0} ms",
            training.len(),
            model.intents().len()
        )?;
        writeln!(
            out,
            "{} messages ({} in scope), threshold {}",
            report.messages, report.in_scope, report.threshold
        )?;
        for (name, value) in [
            ("in-scope accuracy", report.in_scope_accuracy),
            ("cascade accuracy (in scope)", report.cascade_accuracy),
            ("macro-F1", report.macro_f1),
            ("out-of-scope precision", report.oos_precision),
            ("out-of-scope recall", report.oos_recall),
            ("local precision", report.local_precision),
            ("local coverage (in scope)", report.local_coverage),
        ] {
            writeln!(out, "  {name:<28}{:>7.2} %", value * 100.0)?;
        }
        for (stage, share) in &report.stage_share {
            let precision = report
                .stage_precision
                .get(stage)
                .map_or(String::new(), |p| format!(", {:.2} % right", p * 100.0));
            writeln!(
                out,
                "  stage {stage:<22}{:>7.2} %{precision}",
                share * 100.0
            )?;
        }
        for (language, l) in &report.by_language {
            writeln!(
                out,
                "  {language:<6} {:>5} messages: in-scope {:.2} %, cascade {:.2} %, coverage {:.2} %, oos recall {:.2} %",
                l.messages,
                l.in_scope_accuracy * 100.0,
                l.cascade_accuracy * 100.0,
                l.local_coverage * 100.0,
                l.oos_recall * 100.0
            )?;
        }
        writeln!(
            out,
            "  latency p50 {:.1} µs, p99 {:.1} µs; LLM calls {}",
            report.p50_us, report.p99_us, report.llm_calls
        )?;
        if let Some(s) = &semantic {
            print_semantic(&mut out, s)?;
        }
        if let Some(llm) = &llm {
            writeln!(
                out,
                "  LLM: {} format; {} calls failed (left to the fallback)",
                if llm.json_mode {
                    "JSON mode"
                } else {
                    "json_schema"
                },
                llm.failures.values().sum::<usize>()
            )?;
            for (reason, n) in &llm.failures {
                writeln!(out, "    failed: {reason} ×{n}")?;
            }
            for r in &llm.rejections {
                writeln!(
                    out,
                    "    answers rejected as {} ×{}: {}; e.g. {:?}",
                    r.reason, r.count, r.problem, r.example
                )?;
            }
        }
        print_details(&mut out, &report, sweep.as_deref())?;
    }
    Ok(())
}

/// The semantic stage's lines of `tandem eval --embedder`.
fn print_semantic(
    out: &mut impl Write,
    s: &tandem_classify::eval::SemanticReport,
) -> std::io::Result<()> {
    writeln!(
        out,
        "  semantic stage ({}): threshold {}, lexical alone at {}",
        s.model, s.threshold, s.lexical_threshold
    )?;
    writeln!(
        out,
        "    answered {:.2} % of messages, {:.2} % right; left for the LLM {:.2} %; embedder failures {}",
        s.share * 100.0,
        s.precision * 100.0,
        s.left_for_llm * 100.0,
        s.failures
    )?;
    writeln!(
        out,
        "    {} examples embedded in {:.0} ms, head trained in {:.0} ms; one message p50 {:.2} ms, p99 {:.2} ms",
        s.examples, s.embed_examples_ms, s.train_ms, s.embed_p50_ms, s.embed_p99_ms
    )?;
    writeln!(
        out,
        "    semantic threshold   local coverage   local precision   oos recall"
    )?;
    for p in &s.sweep {
        writeln!(
            out,
            "    {:>18.2} {:>15.2} % {:>15.2} % {:>10.2} %",
            p.threshold,
            p.local_coverage * 100.0,
            p.local_precision * 100.0,
            p.oos_recall * 100.0
        )?;
    }
    Ok(())
}

/// `tandem eval --embedder`: embeds the training examples and trains the semantic head as
/// the server does, embeds each message (one request each, timed) and re-decides `run`
/// with the stage on.
fn eval_semantic(
    embedder_settings: &tandem_server::config::EmbedderSettings,
    threshold: f32,
    training: &[tandem_classify::Example],
    data: &[tandem_classify::Example],
    model: &tandem_classify::Model,
    run: &mut tandem_classify::eval::LocalRun,
) -> anyhow::Result<tandem_classify::eval::SemanticReport> {
    let embedder = tandem_server::startup::embedder(embedder_settings)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let texts: Vec<String> = training.iter().map(|e| e.text.clone()).collect();
    let started = std::time::Instant::now();
    let mut vectors = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(32) {
        vectors.extend(
            runtime
                .block_on(embedder.embed(chunk))
                .map_err(|e| anyhow::anyhow!("embedding the training examples: {e}"))?,
        );
    }
    let embed_examples_ms = started.elapsed().as_secs_f64() * 1e3;
    let labelled: Vec<(String, Vec<f32>)> = training
        .iter()
        .map(|e| e.intent.clone())
        .zip(vectors)
        .collect();
    let started = std::time::Instant::now();
    let index = tandem_classify::semantic::SemanticIndex::train(
        embedder.model(),
        &labelled,
        embedder_settings.options.clone(),
    )?;
    let train_ms = started.elapsed().as_secs_f64() * 1e3;
    let mut times = Vec::with_capacity(data.len());
    let mut failures = 0;
    let message_vectors: Vec<Option<Vec<f32>>> = data
        .iter()
        .map(|example| {
            let started = std::time::Instant::now();
            let answer = runtime.block_on(embedder.embed(std::slice::from_ref(&example.text)));
            times.push(started.elapsed().as_secs_f64() * 1e3);
            match answer {
                Ok(mut v) if v.len() == 1 => Some(v.remove(0)),
                _ => {
                    failures += 1;
                    None
                }
            }
        })
        .collect();
    let matches =
        tandem_classify::eval::run_semantic(run, model, data, threshold, &index, &message_vectors);
    times.sort_by(f64::total_cmp);
    let percentile = |p: f64| tandem_classify::eval::percentile(&times, p);
    let left = run
        .decisions
        .iter()
        .filter(|d| d.stage == "fallback")
        .count();
    Ok(tandem_classify::eval::SemanticReport {
        model: embedder.model().to_owned(),
        threshold: index.options().threshold,
        lexical_threshold: index.options().lexical_threshold,
        examples: training.len(),
        embed_examples_ms,
        train_ms,
        embed_p50_ms: percentile(0.5),
        embed_p99_ms: percentile(0.99),
        failures,
        share: 0.0,
        precision: 0.0,
        left_for_llm: left as f64 / data.len().max(1) as f64,
        sweep: tandem_classify::eval::semantic_sweep(
            data,
            run,
            &matches,
            &tandem_classify::eval::SEMANTIC_SWEEP,
        ),
    })
}

/// The human-readable part of `tandem eval` beyond the summary: the hardest labels, the most
/// frequent confusions and, with `--sweep`, the threshold trade-off.
fn print_details(
    out: &mut impl Write,
    report: &tandem_classify::eval::Report,
    sweep: Option<&[tandem_classify::eval::ThresholdPoint]>,
) -> std::io::Result<()> {
    let hardest: Vec<_> = report
        .labels
        .iter()
        .filter(|l| l.f1 < 1.0)
        .take(10)
        .collect();
    if !hardest.is_empty() {
        writeln!(out, "hardest labels (F1, precision, recall, messages):")?;
        for l in hardest {
            writeln!(
                out,
                "  {:<28}{:>7.1} %{:>7.1} %{:>7.1} %{:>6}",
                l.label,
                l.f1 * 100.0,
                l.precision * 100.0,
                l.recall * 100.0,
                l.support
            )?;
        }
    }
    if !report.confusions.is_empty() {
        writeln!(out, "most frequent confusions (expected -> decided):")?;
        for c in report.confusions.iter().take(10) {
            writeln!(
                out,
                "  {:>4} × {} -> {}   e.g. {:?}",
                c.count, c.expected, c.decided, c.example
            )?;
        }
    }
    if let Some(points) = sweep {
        writeln!(
            out,
            "local stage by threshold (coverage in scope, precision, out-of-scope recall):"
        )?;
        for p in points {
            writeln!(
                out,
                "  {:<6}{:>7.1} %{:>7.1} %{:>7.1} %",
                p.threshold,
                p.local_coverage * 100.0,
                p.local_precision * 100.0,
                p.oos_recall * 100.0
            )?;
        }
    }
    Ok(())
}

/// What the LLM stage of `tandem eval --llm` did.
struct LlmRun {
    /// Calls made.
    calls: usize,
    /// Calls that gave no triage, by error label.
    failures: std::collections::BTreeMap<&'static str, usize>,
    /// Answers that failed validation, by reason, with an example each.
    rejections: Vec<tandem_classify::llm::Rejection>,
    /// True when the requests went in JSON mode (asked for, or the server refused the schema).
    json_mode: bool,
}

/// The LLM stage of `tandem eval --llm`: every message the local stage left is asked about,
/// eight at a time, as the server would; a failure leaves it to the fallback.
fn ask_llm(
    run: &mut tandem_classify::eval::LocalRun,
    data: &[tandem_classify::Example],
    training: &[tandem_classify::Example],
    env: &HashMap<String, String>,
) -> anyhow::Result<LlmRun> {
    let overrides = tandem_server::config::CliOverrides {
        dev: true,
        ..tandem_server::config::CliOverrides::default()
    };
    let settings =
        tandem_server::config::load(&overrides, env).map_err(|e| anyhow::anyhow!("{e}"))?;
    let Some(llm) = &settings.llm else {
        anyhow::bail!("--llm needs TANDEM_LLM_BASE_URL and TANDEM_LLM_MODEL");
    };
    let classifier = tandem_server::startup::llm_classifier(llm, &settings.prompts_dir)?;
    let mut intents: Vec<tandem_classify::llm::IntentInfo> = Vec::new();
    for example in training {
        match intents.iter_mut().find(|i| i.id == example.intent) {
            Some(info) if info.examples.len() < 3 => info.examples.push(example.text.clone()),
            Some(_) => {}
            None => intents.push(tandem_classify::llm::IntentInfo {
                id: example.intent.clone(),
                description: None,
                examples: vec![example.text.clone()],
            }),
        }
    }
    let asked: Vec<usize> = run
        .decisions
        .iter()
        .enumerate()
        .filter(|(_, d)| d.stage == "fallback")
        .map(|(i, _)| i)
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let answers = runtime.block_on(async {
        let intents = std::sync::Arc::new(intents);
        let mut tasks = tokio::task::JoinSet::new();
        for &i in &asked {
            let (classifier, intents) = (classifier.clone(), std::sync::Arc::clone(&intents));
            let text = data[i].text.clone();
            // The classifier's own semaphore bounds the calls in flight.
            tasks.spawn(async move { (i, classifier.triage(&intents, &[], &text).await) });
        }
        tasks.join_all().await
    });
    let mut failures = std::collections::BTreeMap::new();
    for (i, answer) in answers {
        match answer {
            Ok(triage) => {
                run.decisions[i] = tandem_classify::eval::Decision {
                    intent: triage.intent,
                    stage: "llm",
                };
            }
            Err(error) => {
                *failures.entry(error.label()).or_insert(0) += 1;
                tracing::debug!(%error, "LLM call failed; left to the fallback");
            }
        }
    }
    Ok(LlmRun {
        calls: asked.len(),
        failures,
        rejections: classifier.rejections(),
        json_mode: classifier.uses_json_mode(),
    })
}

/// `tandem check [DIR]`: the configuration, then every problem of the flows.
fn check(args: &CheckArgs, env: &HashMap<String, String>) -> ExitCode {
    let mut overrides = args.config.overrides();
    // Checking is not serving: missing credentials are not a problem here.
    overrides.dev = true;
    if args.dir.is_some() {
        overrides.flows.clone_from(&args.dir);
    }
    let settings = match tandem_server::load(&overrides, env) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("tandem: configuration error: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    eprintln!(
        "tandem: configuration is valid (store: {})",
        tandem_server::startup::redact(&settings.store_url)
    );
    let mut ok = match &settings.flows_dir {
        Some(dir) => check_flows(dir, &settings.flow_variables, "tandem"),
        None if settings.tenants_dir.is_none() => {
            eprintln!("tandem: no flows directory (./flows does not exist): nothing else to check");
            true
        }
        None => true,
    };
    if let Some(dir) = &settings.tenants_dir {
        ok &= check_tenants(dir, env, &settings);
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Checks the flows in `dir`, printing each problem with its place; `who` starts the lines.
fn check_flows(
    dir: &std::path::Path,
    variables: &std::collections::BTreeMap<String, String>,
    who: &str,
) -> bool {
    match tandem_flows::load_dir(dir, variables) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                eprintln!("{warning}");
            }
            eprintln!(
                "{who}: {} flows in {} are valid ({} warning(s))",
                loaded.bot.flows.len(),
                dir.display(),
                loaded.warnings.len()
            );
            true
        }
        Err(error) => {
            eprintln!("{error}");
            false
        }
    }
}

/// Checks every tenant in `dir`: its file, its flows, and that no number or WABA is claimed
/// by two tenants.
fn check_tenants(
    dir: &std::path::Path,
    env: &HashMap<String, String>,
    settings: &tandem_server::Settings,
) -> bool {
    use tandem_server::tenants::{TenantSpec, tenant_dirs};
    let mut ok = true;
    let mut claims = Vec::new();
    let dirs = tenant_dirs(dir);
    for tenant_dir in &dirs {
        match TenantSpec::load(tenant_dir, env, settings) {
            Ok(spec) => {
                let who = format!("tenant {}", spec.id);
                if let Some(flows) = &spec.flows_dir {
                    ok &= check_flows(flows, &settings.flow_variables, &who);
                } else {
                    eprintln!(
                        "{who}: no flows directory: its conversations are recorded, the bot does not answer"
                    );
                }
                claims.push(std::sync::Arc::new(tandem_engine::Tenant::new(
                    &spec.id,
                    tandem_engine::TenantParts {
                        numbers: spec.numbers,
                        wabas: spec.wabas,
                        ..tandem_engine::TenantParts::default()
                    },
                    &settings.engine,
                )));
            }
            Err(error) => {
                eprintln!("tandem: {error}");
                ok = false;
            }
        }
    }
    if let Err(error) = tandem_engine::Tenants::declared(claims) {
        eprintln!("tandem: {error}");
        ok = false;
    }
    eprintln!(
        "tandem: {} tenant(s) in {}{}",
        dirs.len(),
        dir.display(),
        if ok { ", all valid" } else { "" }
    );
    ok
}

fn run(settings: tandem_server::Settings) -> anyhow::Result<()> {
    telemetry::init_tracing(settings.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let metrics = telemetry::init_metrics()?;
        if settings.dev {
            warn_dev_mode(&settings);
        }
        let app = Application::build(settings, Some(metrics)).await?;
        let addr = app.addr()?;
        tracing::info!(%addr, "tandem listening");
        // Tests and scripts read this line to learn the port.
        #[allow(clippy::print_stdout)]
        {
            println!("tandem listening on http://{addr}");
        }
        std::io::stdout().flush().context("writing to stdout")?;
        app.run_until_stopped(shutdown_signal()).await
    })
}

/// Runs `work` on a one-thread runtime with an HTTP client whose requests time out after
/// `timeout` (the commands that talk to a running server).
fn with_http_client<T, F>(
    timeout: std::time::Duration,
    work: impl FnOnce(reqwest::Client) -> F,
) -> anyhow::Result<T>
where
    F: std::future::Future<Output = anyhow::Result<T>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .context("building the HTTP client")?;
    runtime.block_on(work(client))
}

/// The exit code of a command that answers whether everything went through.
fn exit_code(outcome: anyhow::Result<bool>) -> ExitCode {
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("tandem: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `tandem numbers add`: posts the onboarding request and prints the answer; true on 2xx.
#[allow(clippy::print_stdout)]
fn numbers_add(args: &NumbersAddArgs) -> anyhow::Result<bool> {
    with_http_client(std::time::Duration::from_secs(60), |client| async move {
        let mut body = serde_json::json!({
            "phone_number_id": args.phone_number_id,
            "waba_id": args.waba_id,
        });
        if let Some(token) = &args.business_token {
            body["access_token"] = token.clone().into();
        }
        if let Some(code) = &args.code {
            body["code"] = code.clone().into();
        }
        if let Some(coexistence) = args.coexistence {
            body["coexistence"] = coexistence.into();
        }
        let url = format!("{}/v1/numbers", args.url.trim_end_matches('/'));
        let mut request = client.post(&url).json(&body);
        if let Some(token) = &args.api_token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("posting to {url}"))?;
        let status = response.status();
        let answer = response.text().await.unwrap_or_default();
        let pretty = serde_json::from_str::<serde_json::Value>(&answer)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or(answer);
        if status.is_success() {
            println!("{pretty}");
        } else {
            eprintln!("tandem: the server answered {}: {pretty}", status.as_u16());
        }
        Ok(status.is_success())
    })
}

/// Posts each file; returns false when any answer was not 200.
#[allow(clippy::print_stdout)]
fn replay(args: &ReplayArgs) -> anyhow::Result<bool> {
    with_http_client(std::time::Duration::from_secs(30), |client| async move {
        let mut all_ok = true;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut bodies = Vec::new();
        for file in &args.files {
            let body =
                std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            let body = if args.now {
                let mut value: serde_json::Value = serde_json::from_slice(&body)
                    .with_context(|| format!("{} is not JSON", file.display()))?;
                set_timestamps(&mut value, &now.to_string());
                serde_json::to_vec(&value)?
            } else {
                body
            };
            bodies.push((file.display().to_string(), body));
        }
        for (i, text) in args.text.iter().enumerate() {
            // Unique per run, so two replays in the same second are not taken for a retry.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let id = format!("wamid.replay.{nanos}.{i}");
            bodies.push((
                format!("--text {text:?}"),
                text_webhook(args, &id, text, now),
            ));
        }
        for (label, body) in bodies {
            let mut request = client
                .post(&args.url)
                .header("content-type", "application/json");
            if let Some(secret) = &args.secret {
                request = request.header(
                    "x-hub-signature-256",
                    tandem_whatsapp::sign(secret.as_bytes(), &body),
                );
            }
            let response = request
                .body(body)
                .send()
                .await
                .with_context(|| format!("posting to {}", args.url))?;
            let status = response.status();
            let answer = response.text().await.unwrap_or_default();
            all_ok &= status.is_success();
            println!("{label} {} {}", status.as_u16(), answer.trim());
        }
        Ok(all_ok)
    })
}

/// Sets every string field named `timestamp` to `now`.
fn set_timestamps(value: &mut serde_json::Value, now: &str) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key == "timestamp" && v.is_string() {
                    *v = serde_json::Value::String(now.to_owned());
                } else {
                    set_timestamps(v, now);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| set_timestamps(v, now)),
        _ => {}
    }
}

/// A `messages` webhook with one customer text message, as Meta posts it.
fn text_webhook(args: &ReplayArgs, id: &str, text: &str, now: u64) -> Vec<u8> {
    // A BSUID customer comes as a username user does: no phone anywhere.
    let (phone_key, from_key) = if tandem_domain::UserId::is_shaped(&args.from) {
        ("user_id", "from_user_id")
    } else {
        ("wa_id", "from")
    };
    let value = serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "104810000000001", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001111", "phone_number_id": args.phone_number_id},
            "contacts": [{"profile": {"name": "Replay"}, phone_key: args.from}],
            "messages": [{from_key: args.from, "id": id, "timestamp": now.to_string(), "type": "text", "text": {"body": text}}],
        }}]}],
    });
    serde_json::to_vec(&value).unwrap_or_default()
}

fn warn_dev_mode(settings: &tandem_server::Settings) {
    let mut missing = Vec::new();
    if settings.app_secret.is_none() {
        missing.push("webhook signatures are NOT checked (no TANDEM_APP_SECRET)");
    }
    if settings.verify_token.is_none() {
        missing.push("any verify token is accepted (no TANDEM_VERIFY_TOKEN)");
    }
    if settings.api_tokens.is_empty() {
        missing.push("the /v1 API is open to anyone (no TANDEM_API_TOKEN)");
    }
    for line in &missing {
        tracing::warn!("DEV MODE: {line}");
    }
    eprintln!("\n!!! tandem is running in DEV MODE; never expose it to the internet like this:");
    for line in &missing {
        eprintln!("!!!   - {line}");
    }
    eprintln!();
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(error = %error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
