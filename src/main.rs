//! The `blazar-server` command: `serve` (the default), `migrate`, `openapi`.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use blazar_server::{
    app::{self, Application},
    clock::SystemClock,
    config::{Settings, SettingsLayer},
};
use clap::{Parser, Subcommand, ValueEnum};

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

async fn run() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Openapi { format }) = cli.command {
        let spec = blazar_server::api::openapi();
        match format {
            SpecFormat::Json => println!("{}", spec.spec()),
            SpecFormat::Yaml => print!("{}", spec.spec_yaml()),
        }
        return ExitCode::SUCCESS;
    }
    let mut settings = Settings::default();
    if let Some(path) = &cli.config {
        match SettingsLayer::from_toml_file(path) {
            Ok(layer) => settings.apply(layer),
            Err(e) => {
                eprintln!("blazar-server: {e}");
                return ExitCode::from(2);
            }
        }
    }
    settings.apply(cli.settings);
    init_logging(&settings.log_filter);
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
