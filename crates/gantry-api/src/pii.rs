//! Personal data on the way out (contract §5.2): a plate is shown in clear to a `pii` key
//! and masked to every other, e.g. `苏A12345_0` → `苏A1***5_0`: the province and city and
//! the first character of the number stay (enough for "is this my car?" with the caller's
//! own plate in hand), the middle goes, the last character and the colour code stay.

use gantry_pii::Keyring;

use crate::auth::Visibility;

/// Characters of the plate kept at the start (province, city letter, first of the number).
const PLATE_KEPT_HEAD_CHARS: usize = 3;
/// Characters kept at the end of the number.
const PLATE_KEPT_TAIL_CHARS: usize = 1;

/// How plates are shown to one caller: the key ring to open them, and whether in clear.
#[derive(Clone, Copy, Debug)]
pub struct Shown<'a> {
    pub keys: Option<&'a Keyring>,
    pub visibility: Visibility,
}

/// A sealed plate (`plate_enc`) as a caller with `visibility` may see it: opened, then
/// masked unless in clear. Empty when it cannot be opened (no key file, or a key no longer
/// in it), which is logged: the row itself stays intact.
pub fn plate(sealed: &str, shown: Shown<'_>) -> String {
    let opened = match shown.keys.map(|k| k.open(sealed)) {
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            tracing::warn!(error = %e, "a plate could not be opened");
            return String::new();
        }
        None => return String::new(),
    };
    match shown.visibility {
        Visibility::Clear => opened,
        Visibility::Masked => mask_plate(&opened),
    }
}

/// The masked form of a plate (`number_colour`, the colour part kept as is).
pub fn mask_plate(plate: &str) -> String {
    if plate.is_empty() {
        return String::new();
    }
    let (number, colour) = match plate.rsplit_once('_') {
        Some((n, c)) => (n, Some(c)),
        None => (plate, None),
    };
    let chars: Vec<char> = number.chars().collect();
    let mut out = String::with_capacity(plate.len());
    if chars.len() <= PLATE_KEPT_HEAD_CHARS + PLATE_KEPT_TAIL_CHARS {
        // Too short to keep anything of the number: all of it masked.
        out.extend(chars.iter().take(1));
        out.push_str("***");
    } else {
        out.extend(&chars[..PLATE_KEPT_HEAD_CHARS]);
        out.push_str("***");
        out.extend(&chars[chars.len() - PLATE_KEPT_TAIL_CHARS..]);
    }
    if let Some(c) = colour {
        out.push('_');
        out.push_str(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plates_are_masked_as_the_contract_shows() {
        let cases = [
            ("苏A12345_0", "苏A1***5_0"),
            ("苏A12345", "苏A1***5"),
            ("京AD12345_4", "京AD***5_4"),
            ("苏A1_0", "苏***_0"),
            ("", ""),
        ];
        for (plate, masked) in cases {
            assert_eq!(mask_plate(plate), masked, "{plate}");
        }
        let k = Keyring::from_toml(gantry_pii::TEST_KEYS).unwrap();
        let mut buf = gantry_pii::SealBuf::default();
        let sealed =
            std::str::from_utf8(k.seal("苏A12345_0".as_bytes(), &mut buf).0).unwrap().to_string();
        assert_eq!(
            super::plate(&sealed, Shown { keys: Some(&k), visibility: Visibility::Clear }),
            "苏A12345_0"
        );
        assert_eq!(
            super::plate(&sealed, Shown { keys: Some(&k), visibility: Visibility::Masked }),
            "苏A1***5_0"
        );
        assert_eq!(super::plate(&sealed, Shown { keys: None, visibility: Visibility::Clear }), "");
    }
}
