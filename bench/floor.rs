//! The floor for `bench/cpu_per_request.sh`: bare actix-web answering every request with the
//! same bytes, nothing else: the same body and, with `--headers`, the same response headers as
//! the gateway's cache hit (fixed values), so both put the same bytes on the wire. What the
//! gateway spends per cache hit above this is the gateway's own work.
//!
//!     cargo run --release --example floor -- --listen 127.0.0.1:8081 --body FILE \
//!         [--headers FILE] --workers 2

use std::process::ExitCode;

use actix_web::http::header::{ContentType, HeaderName, HeaderValue};
use actix_web::web::{self, Bytes};
use actix_web::{App, HttpResponse, HttpServer};

struct Args {
    listen: String,
    body: String,
    headers: Option<String>,
    workers: usize,
}

const USAGE: &str = "usage: floor --listen ADDR --body FILE [--headers FILE] [--workers N]";

fn parse_args() -> Result<Args, String> {
    let mut listen = None;
    let mut body = None;
    let mut headers = None;
    let mut workers = 2;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => listen = Some(value()?),
            "--body" => body = Some(value()?),
            "--headers" => headers = Some(value()?),
            "--workers" => {
                let v = value()?;
                workers = v
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("--workers: not a positive number: {v}"))?;
            }
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    Ok(Args {
        listen: listen.ok_or("--listen is required")?,
        body: body.ok_or("--body is required")?,
        headers,
        workers,
    })
}

/// The fixed response: body and headers, built once.
struct Fixed {
    body: Bytes,
    headers: Vec<(HeaderName, HeaderValue)>,
}

async fn answer(fixed: web::Data<Fixed>) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    if fixed.headers.is_empty() {
        response.insert_header(ContentType::json());
    }
    for (name, value) in &fixed.headers {
        response.insert_header((name.clone(), value.clone()));
    }
    response.body(fixed.body.clone())
}

/// `name: value` lines (as `curl -D` prints them); date and content-length are actix's own.
fn read_headers(path: &str) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut headers = Vec::new();
    for line in text.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        if ["date", "content-length", "transfer-encoding", "connection"].contains(&name.as_str()) {
            continue;
        }
        let name = HeaderName::try_from(name).map_err(|e| format!("{path}: {e}"))?;
        let value = HeaderValue::try_from(value.trim()).map_err(|e| format!("{path}: {e}"))?;
        headers.push((name, value));
    }
    Ok(headers)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let headers = match args.headers.as_deref().map(read_headers).transpose() {
        Ok(h) => h.unwrap_or_default(),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let body = match std::fs::read(&args.body) {
        Ok(b) => web::Data::new(Fixed {
            body: Bytes::from(b),
            headers,
        }),
        Err(e) => {
            eprintln!("{}: {e}", args.body);
            return ExitCode::FAILURE;
        }
    };
    let run = actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            App::new()
                .app_data(body.clone())
                .default_service(web::to(answer))
        })
        .workers(args.workers)
        .bind(&args.listen)?
        .run()
        .await
    });
    match run {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floor: {e}");
            ExitCode::FAILURE
        }
    }
}
