//! The North American Numbering Plan: which area codes are in service and
//! the region (US state, Canadian province, NANP country) each one serves,
//! from the embedded `nanp.txt` (NANPA assignments; see its header).

use std::sync::OnceLock;

/// Region of each NPA (index = NPA), `None` when not in service.
struct Table {
    by_npa: Box<[Option<&'static str>; 1000]>,
}

fn table() -> &'static Table {
    static T: OnceLock<Table> = OnceLock::new();
    T.get_or_init(|| {
        let mut by_npa = Box::new([None; 1000]);
        for line in include_str!("nanp.txt").lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((npa, region)) = line.split_once('|') else {
                continue;
            };
            if let Ok(n) = npa.parse::<usize>() {
                if n < 1000 {
                    by_npa[n] = Some(region);
                }
            }
        }
        Table { by_npa }
    })
}

/// Whether `npa` is an area code NANPA has put in service.
pub fn area_code_in_service(npa: u16) -> bool {
    region(npa).is_some()
}

/// The region `npa` serves (`US-FL`, `CA-ON`, `JM`, `NANP` for
/// non-geographic codes; several joined by `&`).
pub fn region(npa: u16) -> Option<&'static str> {
    table().by_npa.get(usize::from(npa)).copied().flatten()
}

/// Loads the table (start-up, so the first call does not pay for it).
pub fn warm() {
    let _ = table();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions() {
        assert_eq!(region(305), Some("US-FL"));
        assert_eq!(region(416), Some("CA-ON"));
        assert_eq!(region(876), Some("JM"));
        assert_eq!(region(800), Some("NANP"));
        assert_eq!(region(222), None);
        assert_eq!(region(911), None);
        // Every geographic NPA of the time-zone table is in service here.
        for line in include_str!("timezones.txt").lines() {
            let Some((p, _)) = line.split_once('|') else {
                continue;
            };
            if p.len() >= 4 && p.starts_with('1') {
                let npa: u16 = p[1..4].parse().unwrap();
                assert!(area_code_in_service(npa), "{npa}");
            }
        }
    }
}
