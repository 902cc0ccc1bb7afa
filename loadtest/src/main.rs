//! The `pystash-loadtest` binary: flags -> [`RunConfig`] -> [`run::run`] -> summary and files;
//! `plot` and `report` read earlier runs' files.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Parser;
use pystash_loadtest::config::{Cli, Command, PlotArgs, ReportArgs, RunArgs, RunConfig};
use pystash_loadtest::plot::{self, Series};
use pystash_loadtest::summary::{markdown_table, Summary};
use pystash_loadtest::{hist, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => load_test(cli.run),
        Some(Command::Plot(a)) => plot_runs(a).map(|()| ExitCode::SUCCESS),
        Some(Command::Report(a)) => report(a).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pystash-loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs a load test; exit status 1 when records were lost or something failed.
fn load_test(args: RunArgs) -> anyhow::Result<ExitCode> {
    let cfg = RunConfig::from_args(args)?;
    let stop = Arc::new(AtomicBool::new(false));
    // First Ctrl-C: stop sending, drain, report. Second: exit at once.
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, stop.clone())?;
        signal_hook::flag::register(sig, stop.clone())?;
    }
    let outcome = run::run(&cfg, stop)?;
    let s = &outcome.summary;
    if cfg.json {
        println!("{}", serde_json::to_string_pretty(s)?);
    } else {
        print!("{s}");
    }
    if let Some(dir) = &cfg.out {
        let written = run::write_outputs(dir, &outcome)
            .with_context(|| format!("writing to {}", dir.display()))?;
        for p in written {
            eprintln!("wrote {}", p.display());
        }
    }
    let failed = !s.errors.is_empty() || (s.consumed && s.lost > 0);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn read_summary(path: &Path) -> anyhow::Result<Summary> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a run summary", path.display()))
}

fn plot_runs(a: PlotArgs) -> anyhow::Result<()> {
    let mut series = Vec::new();
    for path in &a.inputs {
        let s = if path.extension().is_some_and(|e| e == "hgrm") {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let points = hist::parse_hgrm(&text);
            if points.is_empty() {
                bail!("{} has no percentile lines", path.display());
            }
            let label = path
                .file_stem()
                .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
            Series {
                label,
                points,
                headline: None,
            }
        } else {
            let s = read_summary(path)?;
            let l = &s.latency_ms;
            Series {
                headline: Some([l.p50, l.p99, l.max]),
                label: s.label,
                points: s.percentiles,
            }
        };
        series.push(s);
    }
    std::fs::write(&a.output, plot::render(&a.title, &series, a.log_y))
        .with_context(|| format!("writing {}", a.output.display()))?;
    eprintln!("wrote {}", a.output.display());
    Ok(())
}

fn report(a: ReportArgs) -> anyhow::Result<()> {
    let runs = a
        .inputs
        .iter()
        .map(|p| read_summary(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    print!("{}", markdown_table(&runs));
    Ok(())
}
