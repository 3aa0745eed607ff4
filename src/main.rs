//! The `metricgate` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use metricgate::settings::{DEFAULT_NAME, LogFormat, Settings, setting_prefix};
use metricgate::sim::{Estate, Simulator};
use metricgate::startup::Application;
use metricgate::telemetry::{self, LogOutput};
use metricgate::upstream::tls;

#[derive(Parser)]
#[command(
    name = "metricgate",
    version,
    about = "A gateway in front of a Darktrace appliance's /metricdata API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// A TOML file layered over config/default.toml.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the appliance simulator alone.
    Simulate {
        #[arg(long, default_value = "127.0.0.1:9090")]
        listen: String,
        #[arg(long, env = "METRICGATE_SIM_PUBLIC_TOKEN", default_value = DEMO_PUBLIC)]
        public_token: String,
        #[arg(long, env = "METRICGATE_SIM_PRIVATE_TOKEN", default_value = DEMO_PRIVATE, hide_default_value = true)]
        private_token: String,
        /// Serve HTTPS with this PEM certificate chain (server certificate first).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Run the gateway on an embedded simulator: no appliance needed. Reads the same file and
    /// METRICGATE__ variables as `serve`; only the appliance is the simulator's.
    Demo {
        /// Where to listen (default 127.0.0.1:8080); given, it wins over the file and the
        /// environment.
        #[arg(long)]
        listen: Option<String>,
        /// A TOML file layered over config/default.toml (as `serve --config`).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate the configuration and exit; for an https appliance, check its certificate too.
    CheckConfig {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print the OpenAPI document (the public surface's, or with `--admin` the admin
    /// listener's).
    Openapi {
        #[arg(long)]
        admin: bool,
    },
}

// The hit path is allocation-heavy (actix's request and response objects); mimalloc keeps it
// measurably cheaper than glibc's allocator. Its v2 series (Cargo.toml): v3 spent a tenth of
// a hit's user time allocating and retiring pages (bench/cpu_per_request.sh, perf).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEMO_PUBLIC: &str = "demo-public-token";
const DEMO_PRIVATE: &str = "demo-private-token";

/// The demo's second appliance: its name (what `?appliance=` takes), label and tokens. Tokens
/// of its own, so a gateway signing one appliance's questions with the other's keys would be
/// refused, as a real fleet would refuse it.
const LAB_NAME: &str = "lab";
const LAB_LABEL: &str = "Lab appliance (simulated)";
const LAB_PUBLIC: &str = "lab-public-token";
const LAB_PRIVATE: &str = "lab-private-token";

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Openapi { admin } => {
            print!(
                "{}",
                if admin {
                    metricgate::api::openapi::admin_document()
                } else {
                    metricgate::api::openapi::document()
                }
            );
            ExitCode::SUCCESS
        }
        Command::CheckConfig { config } => match Settings::load(config.as_deref()) {
            Ok(settings) => run(async move {
                // Every appliance, each named: one with an untrusted certificate fails the
                // check, after the others have been checked too (one run shows every fix).
                let mut refused = Vec::new();
                for appliance in settings.fleet() {
                    let name = &appliance.name;
                    let at = setting_prefix(name, settings.upstream_is_appliance);
                    match tls::check(&appliance.upstream).await {
                        Ok(Some(tls)) => println!("appliance {name} ({at}): {tls}"),
                        Ok(None) => {
                            println!("appliance {name} ({at}): plain HTTP, no TLS to check")
                        }
                        // The refusal names `upstream.*` settings: this appliance's are `at`.
                        Err(e) if at != "upstream" => refused.push(format!(
                            "appliance {name}: {}",
                            e.replace("upstream.", &format!("{at}."))
                        )),
                        Err(e) => refused.push(format!("appliance {name}: {e}")),
                    }
                }
                if !refused.is_empty() {
                    return Err(refused.join("\n"));
                }
                if let Some(dir) = &settings.cache.dir {
                    metricgate::cache::check_dir(dir)?;
                    println!("disk cache: {} (cache.dir) is writable", dir.display());
                }
                println!("configuration OK");
                Ok(())
            }),
            Err(e) => report(&e),
        },
        Command::Serve { config } => {
            let settings = match Settings::load(config.as_deref()) {
                Ok(s) => s,
                Err(e) => return report(&e),
            };
            let _logs = telemetry::init(
                &settings.server.log_level,
                settings.server.log_format,
                LogOutput::Stdout,
            );
            run(async move {
                let app = Application::build(settings)
                    .await
                    .map_err(|e| e.to_string())?;
                app.run_until_stopped().await.map_err(|e| e.to_string())
            })
        }
        Command::Simulate {
            listen,
            public_token,
            private_token,
            tls_cert,
            tls_key,
        } => {
            let _logs = telemetry::init("info", LogFormat::Json, LogOutput::Stdout);
            run(async move {
                let (sim, server) = match (tls_cert, tls_key) {
                    (Some(cert), Some(key)) => {
                        let read = |p: PathBuf| {
                            std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))
                        };
                        let (cert, key) = (read(cert)?, read(key)?);
                        Simulator::bind_tls(&listen, &public_token, &private_token, &cert, &key)
                    }
                    _ => Simulator::bind(&listen, &public_token, &private_token),
                }
                .map_err(|e| format!("cannot serve on {listen}: {e}"))?;
                tracing::info!(url = %sim.url(), "appliance simulator listening");
                server.await.map_err(|e| e.to_string())
            })
        }
        Command::Demo { listen, config } => {
            run(async move {
                // Two appliances: the default one (the short form, so the README's first
                // query runs unchanged) and `lab`, with its own tokens, catalog and devices.
                let sim = Simulator::spawn("127.0.0.1:0", DEMO_PUBLIC, DEMO_PRIVATE)
                    .map_err(|e| e.to_string())?;
                let lab = Simulator::spawn_estate(
                    "127.0.0.1:0",
                    LAB_PUBLIC,
                    LAB_PRIVATE,
                    Estate::seeded(1),
                )
                .map_err(|e| e.to_string())?;
                let given: Option<SocketAddr> = listen
                    .map(|l| {
                        l.parse().map_err(|_| {
                            format!("--listen: {l:?} is not an address such as 127.0.0.1:8080")
                        })
                    })
                    .transpose()?;
                let listen = given.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)));
                // The operator's endpoints on a free loopback port beside the public one;
                // pretty logs. A file or METRICGATE__ variables may change these, and any other
                // setting; the appliance is always the simulator.
                let defaults = format!(
                    "[server]\nlisten = \"{listen}\"\nlog_format = \"pretty\"\n[admin]\nlisten = \"{}\"\n",
                    SocketAddr::new(listen.ip(), 0)
                );
                let mut overrides = vec![
                    ("upstream.url", sim.url()),
                    ("upstream.public_token", DEMO_PUBLIC.to_owned()),
                    ("upstream.private_token", DEMO_PRIVATE.to_owned()),
                    ("upstream.private_token_file", String::new()),
                    ("upstream.ca_file", String::new()),
                    ("upstream.pin_sha256", String::new()),
                ];
                // `appliances.lab.*`: the keys spelled out, as `LAB_NAME` says.
                overrides.extend([
                    ("appliances.lab.url", lab.url()),
                    ("appliances.lab.label", LAB_LABEL.to_owned()),
                    ("appliances.lab.public_token", LAB_PUBLIC.to_owned()),
                    ("appliances.lab.private_token", LAB_PRIVATE.to_owned()),
                    ("appliances.lab.private_token_file", String::new()),
                    ("appliances.lab.ca_file", String::new()),
                    ("appliances.lab.pin_sha256", String::new()),
                ]);
                if let Some(given) = given {
                    overrides.push(("server.listen", given.to_string()));
                }
                let settings = Settings::load_demo(config.as_deref(), &defaults, &overrides)
                    .map_err(|e| e.to_string())?;
                // Logs to stderr, the banner to stdout: `demo > file` keeps the banner alone,
                // and on a terminal the banner comes after the startup lines.
                let _logs = telemetry::init(
                    &settings.server.log_level,
                    settings.server.log_format,
                    LogOutput::Stderr,
                );
                let app = Application::build(settings)
                    .await
                    .map_err(|e| e.to_string())?;
                let url = format!("http://127.0.0.1:{}", app.port());
                let admin = app
                    .admin_port()
                    .map(|p| format!("http://127.0.0.1:{p}"))
                    .unwrap_or_else(|| url.clone());
                let ready = app.ready();
                let appliances = [
                    (DEFAULT_NAME, sim.url(), "demo tokens; the default"),
                    (
                        LAB_NAME,
                        lab.url(),
                        "tokens of its own, its own catalog and devices",
                    ),
                ];
                tokio::spawn(async move {
                    let in_time = tokio::time::timeout(DEMO_READY_WITHIN, ready).await.is_ok();
                    // Let the log thread write the startup lines before the banner.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    print!("{}", demo_banner(&url, &admin, &appliances, in_time));
                });
                app.run_until_stopped().await.map_err(|e| e.to_string())
            })
        }
    }
}

/// How long the demo waits for the gateway to be ready before printing its banner anyway.
const DEMO_READY_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// What the demo prints once it can answer: the explorer's address first.
/// `appliances`: (name, simulator URL, what sets it apart), the default first.
fn demo_banner(url: &str, admin: &str, appliances: &[(&str, String, &str)], ready: bool) -> String {
    let state = if ready {
        "ready"
    } else {
        "started (not ready yet: see the logs)"
    };
    let simulators: String = appliances
        .iter()
        .map(|(name, at, note)| format!("\n    {name:<8} {at} ({note})"))
        .collect();
    format!(
        "
metricgate demo {state}. Open the explorer:

    {url}/

  API docs (Swagger UI)  {url}/docs/
  a first query          curl -s '{url}/v1/metricdata?metric=connections&did=123&from=2024-01-15T12:00:00Z&to=2024-01-15T13:00:00Z&interval=5min'
  the metric catalog     curl -s '{url}/v1/metrics'
  the appliances         curl -s '{url}/v1/appliances'
  the lab appliance      curl -s '{url}/v1/metricdata?appliance={LAB_NAME}&metric=connections&did=123&from=2024-01-15T12:00:00Z&to=2024-01-15T13:00:00Z&interval=5min'
  appliance simulators (the gateway signs for you):{simulators}
  admin (operators only) {admin}/internal/cache, /internal/limits, /internal/reload

Ctrl-C stops it.
"
    )
}

fn run(fut: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return report(&e),
    };
    match runtime.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e),
    }
}

fn report(e: &dyn std::fmt::Display) -> ExitCode {
    for line in e.to_string().lines() {
        eprintln!("metricgate: {line}");
    }
    ExitCode::FAILURE
}
