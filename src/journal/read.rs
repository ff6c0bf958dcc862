//! Reading the journal for `passerelle audit verify|show|export`.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use jiff::civil::Date;

use super::record::Record;
use super::register::{CSV_HEADER, Ends, Filter};
use super::verify::{Location, Verifier, VerifyReport};
use crate::policy::TrustedKey;

/// Why the journal could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A file or the directory could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The output could not be written.
    #[error("cannot write the output: {0}")]
    Output(#[source] io::Error),
}

/// `journal-YYYY-MM-DD.jsonl`: the file of one UTC day.
pub fn file_name_for(day: Date) -> String {
    format!("journal-{day}.jsonl")
}

/// The journal files of `dir`, oldest first. Other files (the reserve, torn tails set
/// aside) are ignored.
pub fn journal_files(dir: &Path) -> io::Result<Vec<(Date, PathBuf)>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(day) = name
            .to_str()
            .and_then(|n| n.strip_prefix("journal-"))
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|d| d.parse::<Date>().ok())
        else {
            continue;
        };
        if file_name_for(day).as_str() == name.to_str().unwrap_or_default()
            && entry.file_type()?.is_file()
        {
            files.push((day, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

/// One line of a file: `bytes[start..end]`, and whether a `\n` followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Line {
    pub start: usize,
    pub end: usize,
    pub terminated: bool,
}

/// The lines of `bytes`; an empty last piece after the final `\n` is not a line.
pub(crate) fn split_lines(bytes: &[u8]) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut start = 0;
    while start < bytes.len() {
        match bytes[start..].iter().position(|&b| b == b'\n') {
            Some(n) => {
                lines.push(Line {
                    start,
                    end: start + n,
                    terminated: true,
                });
                start += n + 1;
            }
            None => {
                lines.push(Line {
                    start,
                    end: bytes.len(),
                    terminated: false,
                });
                start = bytes.len();
            }
        }
    }
    lines
}

/// Calls `f` with every line of every journal file, in order.
fn for_each_line(
    dir: &Path,
    mut f: impl FnMut(Location, &[u8], bool) -> Result<(), ReadError>,
) -> Result<(), ReadError> {
    let files = journal_files(dir).map_err(|source| ReadError::Io {
        path: dir.to_owned(),
        source,
    })?;
    for (_, path) in files {
        let bytes = fs::read(&path).map_err(|source| ReadError::Io {
            path: path.clone(),
            source,
        })?;
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for (i, line) in split_lines(&bytes).into_iter().enumerate() {
            let at = Location {
                file: file.clone(),
                line: i as u64 + 1,
            };
            f(at, &bytes[line.start..line.end], line.terminated)?;
        }
    }
    Ok(())
}

/// `passerelle audit verify DIR`: checks the chain and the checkpoints with the journal
/// public key. Its `Display` is the human report; [`VerifyReport::is_intact`] the verdict.
pub fn verify(dir: &Path, key: &TrustedKey) -> Result<VerifyReport, ReadError> {
    let mut verifier = Verifier::new(key);
    for_each_line(dir, |at, line, terminated| {
        verifier.feed(at, line, terminated);
        Ok(())
    })?;
    Ok(verifier.finish())
}

/// `passerelle audit show DIR`: writes the records `filter` keeps, as their exact lines
/// (JSON Lines, so `jq` reads them and their hashes still check). Lines that are not
/// records are skipped (`audit verify` reports them). Returns how many were written.
pub fn show(dir: &Path, filter: &Filter, out: &mut dyn Write) -> Result<u64, ReadError> {
    let mut shown = 0;
    for_each_line(dir, |_, line, _| {
        if let Ok(record) = Record::parse(line)
            && filter.matches(&record)
        {
            out.write_all(line).map_err(ReadError::Output)?;
            out.write_all(b"\n").map_err(ReadError::Output)?;
            shown += 1;
        }
        Ok(())
    })?;
    Ok(shown)
}

/// `passerelle audit export --format csv DIR`: the access register, one row per viewing
/// session in start order (see [`super::register`]). Returns the number of rows.
pub fn export_csv(dir: &Path, out: &mut dyn Write) -> Result<u64, ReadError> {
    let mut ends = Ends::new();
    for_each_line(dir, |_, line, _| {
        if let Ok(record) = Record::parse(line) {
            ends.note(&record);
        }
        Ok(())
    })?;
    out.write_all(CSV_HEADER.as_bytes())
        .map_err(ReadError::Output)?;
    let mut rows = 0;
    for_each_line(dir, |_, line, _| {
        if let Some(row) = Record::parse(line).ok().and_then(|r| ends.row(&r)) {
            out.write_all(row.as_bytes()).map_err(ReadError::Output)?;
            rows += 1;
        }
        Ok(())
    })?;
    Ok(rows)
}
