//! Signed EFI variable files (`.auth`, as `sbctl` or efitools' `sign-efi-sig-list` make
//! them for PK, KEK and db): an EFI_VARIABLE_AUTHENTICATION_2 header (a timestamp and a
//! PKCS#7 WIN_CERTIFICATE), then the signature list. mkinstaller checks their shape before
//! carrying them; the installer reads the list to predict what the firmware will measure.

/// WIN_CERT_TYPE_EFI_GUID, revision 2.0, and EFI_CERT_TYPE_PKCS7_GUID
/// (4aafd29d-68df-49ee-8aa9-347d375665a7, in its byte order).
const WIN_CERT_REVISION: u16 = 0x0200;
const WIN_CERT_TYPE_EFI_GUID: u16 = 0x0EF1;
const PKCS7_GUID: [u8; 16] = [
    0x9d, 0xd2, 0xaf, 0x4a, 0xdf, 0x68, 0xee, 0x49, 0x8a, 0xa9, 0x34, 0x7d, 0x37, 0x56, 0x65, 0xa7,
];

/// The signature list of a `.auth` file, its shape checked: EFI_TIME (16 bytes), then a
/// WIN_CERTIFICATE_UEFI_GUID of type PKCS#7 whose length fits, then a non-empty list. The
/// list is what the variable holds once the firmware has taken the file.
pub fn signature_list(bytes: &[u8]) -> Result<&[u8], String> {
    let le16 = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    if bytes.len() < 16 + 24 {
        return Err(format!(
            "{} bytes is too short for a signed EFI variable",
            bytes.len()
        ));
    }
    let length = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes")) as usize;
    if le16(20) != WIN_CERT_REVISION
        || le16(22) != WIN_CERT_TYPE_EFI_GUID
        || bytes[24..40] != PKCS7_GUID
    {
        return Err(
            "not an EFI_VARIABLE_AUTHENTICATION_2 (a PKCS#7 WIN_CERTIFICATE after the timestamp)"
                .into(),
        );
    }
    if length < 24 || 16 + length >= bytes.len() {
        return Err(format!(
            "its certificate of {length} bytes leaves no signature list"
        ));
    }
    Ok(&bytes[16 + length..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_files_are_told_from_anything_else() {
        let mut good = vec![0u8; 16];
        good.extend(40u32.to_le_bytes());
        good.extend(0x0200u16.to_le_bytes());
        good.extend(0x0EF1u16.to_le_bytes());
        good.extend(PKCS7_GUID);
        good.extend([1u8; 16]); // the signature
        good.extend([2u8; 28]); // the list
        assert_eq!(signature_list(&good), Ok(&[2u8; 28][..]));
        let mut bad = good.clone();
        bad[24] ^= 1;
        assert!(signature_list(&bad).is_err());
        let short = good[..16 + 40].to_vec();
        assert!(signature_list(&short)
            .unwrap_err()
            .contains("leaves no signature list"));
        assert!(signature_list(&good[..10]).is_err());
        assert!(signature_list(b"-----BEGIN CERTIFICATE-----").is_err());
    }
}
