package gov.joinery.kstreams;

/**
 * Parses a UUID the way Rust's uuid crate does for Joinery's event_id:
 * hyphenated (8-4-4-4-12), simple (32 hex digits), braced, or urn:uuid:,
 * hex digits in either case. java.util.UUID.fromString is laxer (it accepts
 * short groups), so it is not used.
 */
final class Uuids {
    private Uuids() {}

    /** Returns {hi, lo}, or null when the text is not a UUID. */
    static long[] parse(CharSequence text) {
        String s = text.toString();
        if (s.startsWith("urn:uuid:")) {
            s = s.substring(9);
        } else if (s.length() == 38 && s.charAt(0) == '{' && s.charAt(37) == '}') {
            s = s.substring(1, 37);
        }
        int n = s.length();
        if (n == 36) {
            if (s.charAt(8) != '-' || s.charAt(13) != '-' || s.charAt(18) != '-' || s.charAt(23) != '-') {
                return null;
            }
        } else if (n != 32) {
            return null;
        }
        long hi = 0;
        long lo = 0;
        int digits = 0;
        for (int i = 0; i < n; i++) {
            char c = s.charAt(i);
            if (n == 36 && (i == 8 || i == 13 || i == 18 || i == 23)) {
                continue;
            }
            int v = Character.digit(c, 16);
            if (v < 0 || c > 'f') {
                return null;
            }
            if (digits < 16) {
                hi = (hi << 4) | v;
            } else {
                lo = (lo << 4) | v;
            }
            digits++;
        }
        return digits == 32 ? new long[] {hi, lo} : null;
    }
}
