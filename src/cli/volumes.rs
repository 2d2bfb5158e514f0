//! `berth volumes`: the named volumes berth created, declared or orphaned.

use std::path::Path;

use super::{StatusFormat, cannot_run, host};
use crate::engine::DockerEngine;
use crate::exit::Exit;
use crate::volumes::{self, VolumeRow};

pub fn volumes(partner: Option<&str>, state_dir: &Path, format: StatusFormat) -> Exit {
    host::runtime().block_on(async {
        let engine = match DockerEngine::connect().await {
            Ok(e) => e,
            Err(e) => return cannot_run(&e),
        };
        match volumes::list(&engine, state_dir, partner).await {
            Ok(rows) => {
                out!("{}", render(&rows, format));
                Exit::Ok
            }
            Err(e) => cannot_run(&e),
        }
    })
}

/// A table with a header, or a JSON array.
fn render(rows: &[VolumeRow], format: StatusFormat) -> String {
    match format {
        StatusFormat::Json => {
            let mut s = serde_json::to_string_pretty(rows).expect("rows serialize");
            s.push('\n');
            s
        }
        StatusFormat::Text => {
            if rows.is_empty() {
                return "no volumes\n".to_owned();
            }
            let header = ["NAME", "PARTNER", "SCRIPT", "VOLUME", "STATE"];
            let cells: Vec<[&str; 5]> = rows
                .iter()
                .map(|r| {
                    [
                        r.name.as_str(),
                        r.partner.as_str(),
                        r.script.as_str(),
                        r.volume.as_str(),
                        r.state.as_str(),
                    ]
                })
                .collect();
            let mut widths = header.map(str::len);
            for row in &cells {
                for (w, c) in widths.iter_mut().zip(row) {
                    *w = (*w).max(c.len());
                }
            }
            std::iter::once(header)
                .chain(cells)
                .map(|row| {
                    let line: Vec<String> = row
                        .iter()
                        .zip(widths)
                        .map(|(c, w)| format!("{c:<w$}"))
                        .collect();
                    format!("{}\n", line.join("  ").trim_end())
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volumes::VolumeState;

    #[test]
    fn text_is_an_aligned_table_and_json_an_array() {
        let rows = vec![
            VolumeRow {
                name: "berth-acme-svc-pgdata".into(),
                partner: "acme".into(),
                script: "svc".into(),
                volume: "pgdata".into(),
                state: VolumeState::Declared,
            },
            VolumeRow {
                name: "berth-acme-old-x".into(),
                partner: "acme".into(),
                script: "old".into(),
                volume: "x".into(),
                state: VolumeState::Orphaned,
            },
        ];
        assert_eq!(
            render(&rows, StatusFormat::Text),
            "NAME                   PARTNER  SCRIPT  VOLUME  STATE\n\
             berth-acme-svc-pgdata  acme     svc     pgdata  declared\n\
             berth-acme-old-x       acme     old     x       orphaned\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render(&rows, StatusFormat::Json)).unwrap();
        assert_eq!(json[1]["state"], "orphaned");
        assert_eq!(json[0]["name"], "berth-acme-svc-pgdata");
        assert_eq!(render(&[], StatusFormat::Text), "no volumes\n");
        assert_eq!(render(&[], StatusFormat::Json), "[]\n");
    }
}
