//! The live status page: `model` turns the journal, the store and the
//! self-metrics into a report; `page` renders it as HTML, `text` as a plain
//! table; `config` shows the loaded config with secrets hidden; `http` routes
//! `/`, `/rooms/{id}`, `/status.json` and `/config`.

pub mod config;
pub mod http;
pub mod model;
pub mod page;
pub mod text;
