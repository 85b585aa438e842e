//! `cat`: a step's result as JSON (or text), or one of its files' bytes.

use std::io::Write;
use std::ops::Range;
use std::process::ExitCode;

use crate::error::BoxError;
use crate::formats::{JsonCodec, JsonFormat, StreamFormat, TextFormat};
use crate::pipeline::{JsonOutput, Registry, Rendered};
use crate::sdk::ArtifactHandle;

use super::common::{open, resolve, sanitize, usage, CmdResult};
use super::Global;

/// Print a completed step's result: the value, or one JSON line per item of a stream.
#[derive(clap::Args, Debug)]
#[command(after_help = "What can be rendered without the step's Rust type:\n  \
    milonga.json values and milonga.stream+json streams (as JSON), milonga.text (as text),\n  \
    milonga.bytes (the bytes; with --json, {\"hex\": …}).\n  \
    milonga.postcard values and postcard streams are not self-describing: a tool that registers\n  \
    the step type with Registry::register_printable renders them (`mytool cat STEP`);\n  \
    `milonga cat` says so and `cat STEP FILE` writes a file's verified bytes instead.\n\n\
    Examples:\n  milonga -w ./ws cat Tokenize --range 100..110\n  \
    milonga -w ./ws cat Count --limit 5 --json\n  milonga -w ./ws cat Count-9aX data > data.bin")]
pub(crate) struct Args {
    /// The step: a unique id, a unique prefix, or an unambiguous step name.
    step: String,
    /// Write this file of the result (verified bytes) instead of rendering the result.
    file: Option<String>,
    /// Items `a..b` of a stream (`a..` to the end, `..b` from the start).
    #[arg(long, value_name = "A..B", value_parser = parse_range)]
    range: Option<Range<u64>>,
    /// At most this many items of a stream.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
}

fn parse_range(s: &str) -> Result<Range<u64>, String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("{s:?} is not a range A..B"))?;
    let num = |x: &str, default: u64| -> Result<u64, String> {
        if x.is_empty() {
            Ok(default)
        } else {
            x.parse().map_err(|_| format!("{x:?} is not a number"))
        }
    };
    let (a, b) = (num(a, 0)?, num(b, u64::MAX)?);
    if b < a {
        return Err(format!("{s:?} ends before it starts"));
    }
    Ok(a..b)
}

/// Renders a result of a built-in, self-describing format.
fn render_builtin(
    format: &str,
    artifact: ArtifactHandle,
    items: Range<u64>,
) -> Option<Result<Rendered, BoxError>> {
    Some(match format {
        "milonga.json" => {
            JsonOutput::<serde_json::Value>::render(&JsonFormat::DEFAULT, artifact, items)
        }
        "milonga.text" => TextFormat::DEFAULT.render(artifact, items),
        "milonga.stream+json" => {
            StreamFormat::<serde_json::Value, JsonCodec>::with_codec(JsonCodec)
                .render(artifact, items)
        }
        _ => return None,
    })
}

pub(crate) fn run(global: &Global, args: Args, registry: &Registry) -> CmdResult {
    let ws = open(global)?;
    let info = resolve(&ws, &args.step)?;
    let artifact = ws.artifact(&info.unique_id)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if let Some(name) = args.file {
        let bytes = artifact.bytes(&name)?;
        out.write_all((*bytes).as_ref())?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let range = args.range.unwrap_or(0..u64::MAX);
    let range = match args.limit {
        Some(n) => range.start..range.end.min(range.start.saturating_add(n)),
        None => range,
    };
    if info.format_id == crate::formats::BytesFormat::ID {
        let bytes: Vec<u8> =
            crate::sdk::Format::read(&crate::formats::BytesFormat::DEFAULT, artifact)?;
        if global.json {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            serde_json::to_writer(&mut out, &serde_json::json!({ "hex": hex }))?;
            out.write_all(b"\n")?;
        } else {
            out.write_all(&bytes)?;
        }
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let rendered = match render_builtin(&info.format_id, artifact.clone(), range.clone()) {
        Some(r) => r?,
        None => match registry.render(&info.step_type, artifact, range) {
            Some(r) => r?,
            None => {
                let files: Vec<String> = ws
                    .artifact(&info.unique_id)?
                    .files()
                    .into_iter()
                    .map(|f| sanitize(&f.name))
                    .collect();
                return Err(usage(format!(
                    "cannot render {} ({}) without its step type: its format is not \
                     self-describing; use a tool that registers {} with \
                     Registry::register_printable, or write a file's bytes: cat STEP FILE \
                     (files: {})",
                    sanitize(&info.unique_id),
                    sanitize(&info.format_id),
                    sanitize(&info.step_type),
                    files.join(", ")
                )));
            }
        },
    };
    match rendered {
        Rendered::Value(serde_json::Value::String(s)) if !global.json => {
            out.write_all(s.as_bytes())?;
            if !s.ends_with('\n') {
                out.write_all(b"\n")?;
            }
        }
        Rendered::Value(v) => {
            serde_json::to_writer_pretty(&mut out, &v)?;
            out.write_all(b"\n")?;
        }
        Rendered::Items(items) => {
            for item in items {
                serde_json::to_writer(&mut out, &item?)?;
                out.write_all(b"\n")?;
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
