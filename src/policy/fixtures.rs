//! The Metz topology's policies (DESIGN.md "The Metz topology"), shared by the tests.

/// SNCF's policy: its station cameras to the CSU, on request, Metz Ville and Metz Nord
/// re-sharable to the CCOR only.
pub(crate) const SNCF_POLICY: &str = r#"
version = 1
site = "sncf.metz.example"
serial = 3
valid_from = 2026-02-02T00:00:00Z
valid_until = 2027-02-01T23:59:59Z
time_zone = "Europe/Paris"
reference = "Convention de déport d'images SNCF / Eurométropole de Metz, 2026-02-02"

[[grant]]
partner = "csu.metz.example"
cameras = ["metz-ville/**", "metz-nord/**"]
mode = "on_request"
onward = ["ccor.metz.example"]
basis = "Code des transports L1632-2; convention du 2 février 2026"

[[grant]]
partner = "csu.metz.example"
cameras = ["woippy/**", "ars-sur-moselle/**", "peltre/**"]
mode = "on_request"
onward = []
basis = "Code des transports L1632-2; convention du 2 février 2026"
"#;

/// The CSU's policy: city cameras to CCOR, CORG and police nationale; imported SNCF
/// cameras (prefix `sncf`) to the CCOR only.
pub(crate) const CSU_POLICY: &str = r#"
version = 1
site = "csu.metz.example"
serial = 7
valid_from = 2026-02-02T00:00:00Z
valid_until = 2027-02-01T23:59:59Z
time_zone = "Europe/Paris"
reference = "Convention de déport d'images SNCF / Eurométropole de Metz, 2026-02-02"

[[grant]]
partner = "ccor.metz.example"
cameras = ["metz/**", "sncf/metz-ville/**", "sncf/metz-nord/**"]
hours = ["00:00-24:00"]
max_streams = 16
max_bitrate_kbps = 200000
mode = "live"
onward = []
basis = "CSI L252-2; arrêté préfectoral n° 2025-123"

[[grant]]
partner = "corg.gendarmerie.example"
cameras = ["metz/**", "marly/**", "moulins-les-metz/**", "noisseville/**", "nouilly/**"]
mode = "live"
basis = "CSI L252-2; convention du 2 février 2026"

[[grant]]
partner = "police.interieur.example"
cameras = ["metz/**", "marly/**", "moulins-les-metz/**", "noisseville/**", "nouilly/**"]
mode = "live"
basis = "Convention de 2023"
"#;
