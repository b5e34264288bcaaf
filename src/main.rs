//! The `blazar-server` command: `serve` (the default), `migrate`, `openapi`; it gathers the
//! settings' layers (config.rs) and hands them to the app.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use blazar_server::{
    app::{self, Application},
    clock::SystemClock,
    config::{self, Settings, SettingsLayer},
};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "blazar-server",
    version,
    about = "OpenStack Blazar's reservation API v1 for compute hosts"
)]
struct Cli {
    /// TOML file with settings (below environment variables and flags).
    #[arg(long, global = true, env = "BLAZAR_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: SettingsLayer,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the OpenAPI spec and exit.
    Openapi {
        #[arg(long, value_enum, default_value_t = SpecFormat::Json)]
        format: SpecFormat,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum SpecFormat {
    Json,
    Yaml,
}

fn main() -> ExitCode {
    match blazar_server::app::runtime() {
        Ok(rt) => rt.block_on(run()),
        Err(e) => {
            eprintln!("blazar-server: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_cli() -> Cli {
    let matches = config::complete_flags(Cli::command()).get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Defaults with the file on top, then the deprecated variables, then today's variables and
/// flags; the warnings name the new keys and are logged once logging is set up.
fn load_settings(cli: &mut Cli, warnings: &mut Vec<String>) -> Result<Settings, String> {
    let mut settings = match &cli.config {
        Some(path) => Settings::from_toml_file(path, warnings).map_err(|e| e.to_string())?,
        None => Settings::default(),
    };
    // The variables of earlier releases stand for today's flags, which kept their names.
    let old = config::legacy_env_args(&Cli::command(), |name| std::env::var(name).ok(), warnings);
    if !old.is_empty() {
        let args = std::iter::once("blazar-server".to_string()).chain(old);
        let legacy = Cli::try_parse_from(args)
            .map_err(|e| format!("a deprecated environment variable has an invalid value: {e}"))?;
        settings.apply(legacy.settings);
    }
    settings.apply(std::mem::take(&mut cli.settings));
    Ok(settings)
}

async fn run() -> ExitCode {
    let mut cli = parse_cli();
    if let Some(Command::Openapi { format }) = cli.command {
        let spec = blazar_server::api::openapi();
        match format {
            SpecFormat::Json => println!("{}", spec.spec()),
            SpecFormat::Yaml => print!("{}", spec.spec_yaml()),
        }
        return ExitCode::SUCCESS;
    }
    let mut warnings = Vec::new();
    let settings = match load_settings(&mut cli, &mut warnings) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("blazar-server: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&settings.log.filter);
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => migrate(&settings).await,
        _ => serve(settings).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("blazar-server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
}

async fn migrate(settings: &Settings) -> Result<(), app::AppError> {
    settings.validate()?;
    app::open_database(settings).await?;
    tracing::info!("migrations applied");
    Ok(())
}

async fn serve(settings: Settings) -> Result<(), app::AppError> {
    let app = Application::build(settings, Arc::new(SystemClock)).await?;
    app.run(shutdown_signal())
        .await
        .map_err(|source| app::AppError::Bind {
            bind: "server".into(),
            source,
        })
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
