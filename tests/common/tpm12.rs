//! TPM 1.2 commands the tests send (TPM 1.2 main spec, part 3).

pub fn startup(kind: u16) -> Vec<u8> {
    [
        &[0, 0xc1, 0, 0, 0, 12, 0, 0, 0, 0x99][..],
        &kind.to_be_bytes(),
    ]
    .concat()
}
pub fn extend(pcr: u32, digest: [u8; 20]) -> Vec<u8> {
    [
        &[0, 0xc1, 0, 0, 0, 34, 0, 0, 0, 0x14][..],
        &pcr.to_be_bytes(),
        &digest,
    ]
    .concat()
}
pub fn pcr_read(pcr: u32) -> Vec<u8> {
    [
        &[0, 0xc1, 0, 0, 0, 14, 0, 0, 0, 0x15][..],
        &pcr.to_be_bytes(),
    ]
    .concat()
}
pub const SAVE_STATE: [u8; 10] = [0, 0xc1, 0, 0, 0, 10, 0, 0, 0, 0x98];
pub const ST_CLEAR: u16 = 1;
pub const ST_STATE: u16 = 2;

/// The response code of a TPM 1.2 response.
pub fn rc(response: &[u8]) -> u32 {
    u32::from_be_bytes(response[6..10].try_into().unwrap())
}
