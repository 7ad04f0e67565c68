/*
 * celeris_signal.h - the Celeris signal feed wire format (version 1) for C and C++ consumers.
 *
 * Specification: docs/wire-format.md. Python reference: celeris.serving.feed.
 *
 * A publisher streams, over a Unix domain SOCK_STREAM socket, one 16-byte hello followed by
 * 128-byte records back to back. Every integer and float is little-endian; floats are
 * IEEE-754 binary32. The structs below have exactly the wire layout (the static asserts pin
 * every offset), but decode with celeris_signal_decode(): it reads each field byte by byte,
 * so it is correct on any host byte order and alignment, and it checks the record.
 *
 * Header-only, C99/C11 and C++11; no allocation, no libc beyond memcpy.
 *
 *     #include "celeris_signal.h"
 *     uint8_t buf[CELERIS_SIGNAL_RECORD_SIZE];   // read exactly 128 bytes from the socket
 *     celeris_signal_record rec;
 *     celeris_signal_status st = celeris_signal_decode(buf, sizeof buf, &rec);
 *     if (st != CELERIS_SIGNAL_OK) { fprintf(stderr, "%s\n", celeris_signal_status_name(st)); }
 */
#ifndef CELERIS_SIGNAL_H
#define CELERIS_SIGNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#define CELERIS_SIGNAL_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#else
#define CELERIS_SIGNAL_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif

#define CELERIS_SIGNAL_MAGIC 0x47495343u       /* bytes 'C' 'S' 'I' 'G' */
#define CELERIS_SIGNAL_HELLO_MAGIC 0x4C485343u /* bytes 'C' 'S' 'H' 'L' */
#define CELERIS_SIGNAL_VERSION 1u
#define CELERIS_SIGNAL_RECORD_SIZE 128u
#define CELERIS_SIGNAL_HELLO_SIZE 16u
#define CELERIS_SIGNAL_MAX_HORIZON 16u
#define CELERIS_SIGNAL_RESERVED_SIZE 20u
#define CELERIS_SIGNAL_CRC_OFFSET 124u /* the CRC-32 covers bytes [0, 124) */

/* The `signal` byte. */
enum {
    CELERIS_SIGNAL_SHORT = -1,
    CELERIS_SIGNAL_FLAT = 0,
    CELERIS_SIGNAL_LONG = 1
};

/* One record, in wire layout (128 bytes, 8-byte aligned, no implicit padding). */
typedef struct celeris_signal_record {
    uint32_t magic;         /*   0  CELERIS_SIGNAL_MAGIC */
    uint16_t version;       /*   4  CELERIS_SIGNAL_VERSION */
    uint16_t record_size;   /*   6  128 */
    uint64_t sequence;      /*   8  per publisher: 1, 2, 3... (never 0) */
    int64_t ts_ns;          /*  16  publish time, ns since the UNIX epoch, UTC (>= 0) */
    uint32_t symbol_id;     /*  24  instrument id */
    int8_t signal;          /*  28  -1 short, 0 flat, +1 long */
    uint8_t flags;          /*  29  0 (all bits reserved in version 1) */
    uint16_t horizon_count; /*  30  forecasts in use, 0..16 */
    float confidence;       /*  32  [0, 1] */
    float forecasts[CELERIS_SIGNAL_MAX_HORIZON]; /* 36  steps 1..horizon_count ahead; rest +0.0 */
    uint32_t model_version; /* 100  registry version of the model (0 = unknown) */
    uint8_t reserved[CELERIS_SIGNAL_RESERVED_SIZE]; /* 104  zero */
    uint32_t crc32;         /* 124  CRC-32 (zlib / ISO-HDLC) of bytes [0, 124) */
} celeris_signal_record;

/* The greeting sent once, before any record, to each new subscriber (16 bytes). */
typedef struct celeris_signal_hello {
    uint32_t magic;         /*  0  CELERIS_SIGNAL_HELLO_MAGIC */
    uint16_t version;       /*  4  CELERIS_SIGNAL_VERSION */
    uint16_t record_size;   /*  6  128 */
    uint64_t next_sequence; /*  8  sequence of the first record this subscriber may receive */
} celeris_signal_hello;

CELERIS_SIGNAL_STATIC_ASSERT(sizeof(float) == 4, "float must be IEEE-754 binary32");
CELERIS_SIGNAL_STATIC_ASSERT(sizeof(celeris_signal_record) == 128, "record size");
CELERIS_SIGNAL_STATIC_ASSERT(offsetof(celeris_signal_record, magic) == 0, "magic offset");
CELERIS_SIGNAL_STATIC_ASSERT(offsetof(celeris_signal_record, version) == 4, "version offset");
CELERIS_SIGNAL_STATIC_ASSERT(offsetof(celeris_signal_record, record_size) == 6, "record_size offset");
CELERIS_SIGNAL_STATIC_ASSERT(offsetof(celeris_signal_record, sequence) == 8, "sequence offset");
CELERIS_SIGNAL_STATIC_ASSERT(offsetof(celeris_signal_record, ts_ns) == 16, "ts_ns offset");
CELERIS_SIGNAL_STATIC_ASSERT(offsetof(celeris_signal_record, symbol_id) == 24, "symbol_id offset");
CELERIS_SIGNAL_STATIC_ASSERT(offsetof(celeris_signal_record, signal) == 28, "signal offset");
CELERIS_SIGNAL_STATIC_ASSERT(offsetof(celeris_signal_record, flags) == 29, "flags offset");
CELERIS_SIGNAL_STATIC_ASSERT(offsetof(celeris_signal_record, horizon_count) == 30, "horizon_count offset");
CELERIS_SIGNAL_STATIC_ASSERT(offsetof(celeris_signal_record, confidence) == 32, "confidence offset");
CELERIS_SIGNAL_STATIC_ASSERT(offsetof(celeris_signal_record, forecasts) == 36, "forecasts offset");
CELERIS_SIGNAL_STATIC_ASSERT(offsetof(celeris_signal_record, model_version) == 100, "model_version offset");
CELERIS_SIGNAL_STATIC_ASSERT(offsetof(celeris_signal_record, reserved) == 104, "reserved offset");
CELERIS_SIGNAL_STATIC_ASSERT(offsetof(celeris_signal_record, crc32) == 124, "crc32 offset");
CELERIS_SIGNAL_STATIC_ASSERT(sizeof(celeris_signal_hello) == 16, "hello size");
CELERIS_SIGNAL_STATIC_ASSERT(offsetof(celeris_signal_hello, next_sequence) == 8, "next_sequence offset");

/* Decoder results; celeris_signal_status_name() gives the field name used by the Python side. */
typedef enum celeris_signal_status {
    CELERIS_SIGNAL_OK = 0,
    CELERIS_SIGNAL_ERR_LENGTH,          /* buffer is not exactly 128 (16 for a hello) bytes */
    CELERIS_SIGNAL_ERR_MAGIC,           /* stream out of step: disconnect */
    CELERIS_SIGNAL_ERR_VERSION,         /* a version this header does not know: disconnect */
    CELERIS_SIGNAL_ERR_RECORD_SIZE,
    CELERIS_SIGNAL_ERR_CRC,
    CELERIS_SIGNAL_ERR_FLAGS,
    CELERIS_SIGNAL_ERR_RESERVED,
    CELERIS_SIGNAL_ERR_SEQUENCE,
    CELERIS_SIGNAL_ERR_TIMESTAMP,
    CELERIS_SIGNAL_ERR_SIGNAL,
    CELERIS_SIGNAL_ERR_HORIZON_COUNT,
    CELERIS_SIGNAL_ERR_CONFIDENCE,
    CELERIS_SIGNAL_ERR_FORECAST,        /* a used forecast is NaN or infinite */
    CELERIS_SIGNAL_ERR_UNUSED_FORECAST  /* an unused forecast slot is not +0.0 */
} celeris_signal_status;

static inline const char *celeris_signal_status_name(celeris_signal_status status) {
    switch (status) {
    case CELERIS_SIGNAL_OK: return "ok";
    case CELERIS_SIGNAL_ERR_LENGTH: return "length";
    case CELERIS_SIGNAL_ERR_MAGIC: return "magic";
    case CELERIS_SIGNAL_ERR_VERSION: return "version";
    case CELERIS_SIGNAL_ERR_RECORD_SIZE: return "record_size";
    case CELERIS_SIGNAL_ERR_CRC: return "crc32";
    case CELERIS_SIGNAL_ERR_FLAGS: return "flags";
    case CELERIS_SIGNAL_ERR_RESERVED: return "reserved";
    case CELERIS_SIGNAL_ERR_SEQUENCE: return "sequence";
    case CELERIS_SIGNAL_ERR_TIMESTAMP: return "ts_ns";
    case CELERIS_SIGNAL_ERR_SIGNAL: return "signal";
    case CELERIS_SIGNAL_ERR_HORIZON_COUNT: return "horizon_count";
    case CELERIS_SIGNAL_ERR_CONFIDENCE: return "confidence";
    case CELERIS_SIGNAL_ERR_FORECAST: return "forecasts";
    case CELERIS_SIGNAL_ERR_UNUSED_FORECAST: return "unused forecasts";
    }
    return "unknown";
}

/* CRC-32/ISO-HDLC (zlib.crc32, Ethernet): reflected polynomial 0xEDB88320, initial value and
 * final xor 0xFFFFFFFF. celeris_signal_crc32("123456789", 9) == 0xCBF43926. */
static const uint32_t celeris_signal_crc_table[256] = {
    0x00000000u, 0x77073096u, 0xEE0E612Cu, 0x990951BAu, 0x076DC419u, 0x706AF48Fu,
    0xE963A535u, 0x9E6495A3u, 0x0EDB8832u, 0x79DCB8A4u, 0xE0D5E91Eu, 0x97D2D988u,
    0x09B64C2Bu, 0x7EB17CBDu, 0xE7B82D07u, 0x90BF1D91u, 0x1DB71064u, 0x6AB020F2u,
    0xF3B97148u, 0x84BE41DEu, 0x1ADAD47Du, 0x6DDDE4EBu, 0xF4D4B551u, 0x83D385C7u,
    0x136C9856u, 0x646BA8C0u, 0xFD62F97Au, 0x8A65C9ECu, 0x14015C4Fu, 0x63066CD9u,
    0xFA0F3D63u, 0x8D080DF5u, 0x3B6E20C8u, 0x4C69105Eu, 0xD56041E4u, 0xA2677172u,
    0x3C03E4D1u, 0x4B04D447u, 0xD20D85FDu, 0xA50AB56Bu, 0x35B5A8FAu, 0x42B2986Cu,
    0xDBBBC9D6u, 0xACBCF940u, 0x32D86CE3u, 0x45DF5C75u, 0xDCD60DCFu, 0xABD13D59u,
    0x26D930ACu, 0x51DE003Au, 0xC8D75180u, 0xBFD06116u, 0x21B4F4B5u, 0x56B3C423u,
    0xCFBA9599u, 0xB8BDA50Fu, 0x2802B89Eu, 0x5F058808u, 0xC60CD9B2u, 0xB10BE924u,
    0x2F6F7C87u, 0x58684C11u, 0xC1611DABu, 0xB6662D3Du, 0x76DC4190u, 0x01DB7106u,
    0x98D220BCu, 0xEFD5102Au, 0x71B18589u, 0x06B6B51Fu, 0x9FBFE4A5u, 0xE8B8D433u,
    0x7807C9A2u, 0x0F00F934u, 0x9609A88Eu, 0xE10E9818u, 0x7F6A0DBBu, 0x086D3D2Du,
    0x91646C97u, 0xE6635C01u, 0x6B6B51F4u, 0x1C6C6162u, 0x856530D8u, 0xF262004Eu,
    0x6C0695EDu, 0x1B01A57Bu, 0x8208F4C1u, 0xF50FC457u, 0x65B0D9C6u, 0x12B7E950u,
    0x8BBEB8EAu, 0xFCB9887Cu, 0x62DD1DDFu, 0x15DA2D49u, 0x8CD37CF3u, 0xFBD44C65u,
    0x4DB26158u, 0x3AB551CEu, 0xA3BC0074u, 0xD4BB30E2u, 0x4ADFA541u, 0x3DD895D7u,
    0xA4D1C46Du, 0xD3D6F4FBu, 0x4369E96Au, 0x346ED9FCu, 0xAD678846u, 0xDA60B8D0u,
    0x44042D73u, 0x33031DE5u, 0xAA0A4C5Fu, 0xDD0D7CC9u, 0x5005713Cu, 0x270241AAu,
    0xBE0B1010u, 0xC90C2086u, 0x5768B525u, 0x206F85B3u, 0xB966D409u, 0xCE61E49Fu,
    0x5EDEF90Eu, 0x29D9C998u, 0xB0D09822u, 0xC7D7A8B4u, 0x59B33D17u, 0x2EB40D81u,
    0xB7BD5C3Bu, 0xC0BA6CADu, 0xEDB88320u, 0x9ABFB3B6u, 0x03B6E20Cu, 0x74B1D29Au,
    0xEAD54739u, 0x9DD277AFu, 0x04DB2615u, 0x73DC1683u, 0xE3630B12u, 0x94643B84u,
    0x0D6D6A3Eu, 0x7A6A5AA8u, 0xE40ECF0Bu, 0x9309FF9Du, 0x0A00AE27u, 0x7D079EB1u,
    0xF00F9344u, 0x8708A3D2u, 0x1E01F268u, 0x6906C2FEu, 0xF762575Du, 0x806567CBu,
    0x196C3671u, 0x6E6B06E7u, 0xFED41B76u, 0x89D32BE0u, 0x10DA7A5Au, 0x67DD4ACCu,
    0xF9B9DF6Fu, 0x8EBEEFF9u, 0x17B7BE43u, 0x60B08ED5u, 0xD6D6A3E8u, 0xA1D1937Eu,
    0x38D8C2C4u, 0x4FDFF252u, 0xD1BB67F1u, 0xA6BC5767u, 0x3FB506DDu, 0x48B2364Bu,
    0xD80D2BDAu, 0xAF0A1B4Cu, 0x36034AF6u, 0x41047A60u, 0xDF60EFC3u, 0xA867DF55u,
    0x316E8EEFu, 0x4669BE79u, 0xCB61B38Cu, 0xBC66831Au, 0x256FD2A0u, 0x5268E236u,
    0xCC0C7795u, 0xBB0B4703u, 0x220216B9u, 0x5505262Fu, 0xC5BA3BBEu, 0xB2BD0B28u,
    0x2BB45A92u, 0x5CB36A04u, 0xC2D7FFA7u, 0xB5D0CF31u, 0x2CD99E8Bu, 0x5BDEAE1Du,
    0x9B64C2B0u, 0xEC63F226u, 0x756AA39Cu, 0x026D930Au, 0x9C0906A9u, 0xEB0E363Fu,
    0x72076785u, 0x05005713u, 0x95BF4A82u, 0xE2B87A14u, 0x7BB12BAEu, 0x0CB61B38u,
    0x92D28E9Bu, 0xE5D5BE0Du, 0x7CDCEFB7u, 0x0BDBDF21u, 0x86D3D2D4u, 0xF1D4E242u,
    0x68DDB3F8u, 0x1FDA836Eu, 0x81BE16CDu, 0xF6B9265Bu, 0x6FB077E1u, 0x18B74777u,
    0x88085AE6u, 0xFF0F6A70u, 0x66063BCAu, 0x11010B5Cu, 0x8F659EFFu, 0xF862AE69u,
    0x616BFFD3u, 0x166CCF45u, 0xA00AE278u, 0xD70DD2EEu, 0x4E048354u, 0x3903B3C2u,
    0xA7672661u, 0xD06016F7u, 0x4969474Du, 0x3E6E77DBu, 0xAED16A4Au, 0xD9D65ADCu,
    0x40DF0B66u, 0x37D83BF0u, 0xA9BCAE53u, 0xDEBB9EC5u, 0x47B2CF7Fu, 0x30B5FFE9u,
    0xBDBDF21Cu, 0xCABAC28Au, 0x53B39330u, 0x24B4A3A6u, 0xBAD03605u, 0xCDD70693u,
    0x54DE5729u, 0x23D967BFu, 0xB3667A2Eu, 0xC4614AB8u, 0x5D681B02u, 0x2A6F2B94u,
    0xB40BBE37u, 0xC30C8EA1u, 0x5A05DF1Bu, 0x2D02EF8Du
};

static inline uint32_t celeris_signal_crc32(const uint8_t *data, size_t len) {
    uint32_t crc = 0xFFFFFFFFu;
    size_t i;
    for (i = 0; i < len; ++i) {
        crc = celeris_signal_crc_table[(crc ^ data[i]) & 0xFFu] ^ (crc >> 8);
    }
    return crc ^ 0xFFFFFFFFu;
}

/* Little-endian loads and stores, independent of the host's byte order and alignment. */
static inline uint16_t celeris_signal_load_u16(const uint8_t *p) {
    return (uint16_t)((uint16_t)p[0] | (uint16_t)((uint16_t)p[1] << 8));
}

static inline uint32_t celeris_signal_load_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline uint64_t celeris_signal_load_u64(const uint8_t *p) {
    return (uint64_t)celeris_signal_load_u32(p) | ((uint64_t)celeris_signal_load_u32(p + 4) << 32);
}

static inline void celeris_signal_store_u16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)(v >> 8);
}

static inline void celeris_signal_store_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)((v >> 8) & 0xFFu);
    p[2] = (uint8_t)((v >> 16) & 0xFFu);
    p[3] = (uint8_t)(v >> 24);
}

static inline void celeris_signal_store_u64(uint8_t *p, uint64_t v) {
    celeris_signal_store_u32(p, (uint32_t)(v & 0xFFFFFFFFu));
    celeris_signal_store_u32(p + 4, (uint32_t)(v >> 32));
}

static inline float celeris_signal_f32_from_bits(uint32_t bits) {
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline uint32_t celeris_signal_f32_bits(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    return bits;
}

static inline int celeris_signal_f32_bits_finite(uint32_t bits) {
    return (bits & 0x7F800000u) != 0x7F800000u; /* exponent all ones: inf or NaN */
}

/* Decode and check one hello; `out` is written only on success. */
static inline celeris_signal_status celeris_signal_decode_hello(const uint8_t *buf, size_t len,
                                                                celeris_signal_hello *out) {
    celeris_signal_hello h;
    if (len != CELERIS_SIGNAL_HELLO_SIZE) return CELERIS_SIGNAL_ERR_LENGTH;
    h.magic = celeris_signal_load_u32(buf);
    h.version = celeris_signal_load_u16(buf + 4);
    h.record_size = celeris_signal_load_u16(buf + 6);
    h.next_sequence = celeris_signal_load_u64(buf + 8);
    if (h.magic != CELERIS_SIGNAL_HELLO_MAGIC) return CELERIS_SIGNAL_ERR_MAGIC;
    if (h.version != CELERIS_SIGNAL_VERSION) return CELERIS_SIGNAL_ERR_VERSION;
    if (h.record_size != CELERIS_SIGNAL_RECORD_SIZE) return CELERIS_SIGNAL_ERR_RECORD_SIZE;
    if (h.next_sequence == 0) return CELERIS_SIGNAL_ERR_SEQUENCE;
    *out = h;
    return CELERIS_SIGNAL_OK;
}

/* Decode and check one record, in the same order as the Python decoder (framing, checksum,
 * then each field); `out` is written only on success. */
static inline celeris_signal_status celeris_signal_decode(const uint8_t *buf, size_t len,
                                                          celeris_signal_record *out) {
    celeris_signal_record r;
    uint32_t bits;
    uint64_t ts_bits;
    size_t i;
    if (len != CELERIS_SIGNAL_RECORD_SIZE) return CELERIS_SIGNAL_ERR_LENGTH;
    r.magic = celeris_signal_load_u32(buf);
    r.version = celeris_signal_load_u16(buf + 4);
    r.record_size = celeris_signal_load_u16(buf + 6);
    if (r.magic != CELERIS_SIGNAL_MAGIC) return CELERIS_SIGNAL_ERR_MAGIC;
    if (r.version != CELERIS_SIGNAL_VERSION) return CELERIS_SIGNAL_ERR_VERSION;
    if (r.record_size != CELERIS_SIGNAL_RECORD_SIZE) return CELERIS_SIGNAL_ERR_RECORD_SIZE;
    r.crc32 = celeris_signal_load_u32(buf + CELERIS_SIGNAL_CRC_OFFSET);
    if (r.crc32 != celeris_signal_crc32(buf, CELERIS_SIGNAL_CRC_OFFSET)) return CELERIS_SIGNAL_ERR_CRC;
    r.flags = buf[29];
    if (r.flags != 0u) return CELERIS_SIGNAL_ERR_FLAGS;
    for (i = 0; i < CELERIS_SIGNAL_RESERVED_SIZE; ++i) {
        r.reserved[i] = buf[104 + i];
        if (r.reserved[i] != 0u) return CELERIS_SIGNAL_ERR_RESERVED;
    }
    r.sequence = celeris_signal_load_u64(buf + 8);
    if (r.sequence == 0u) return CELERIS_SIGNAL_ERR_SEQUENCE;
    ts_bits = celeris_signal_load_u64(buf + 16);
    memcpy(&r.ts_ns, &ts_bits, sizeof r.ts_ns); /* two's complement, without a signed cast */
    if (r.ts_ns < 0) return CELERIS_SIGNAL_ERR_TIMESTAMP;
    r.symbol_id = celeris_signal_load_u32(buf + 24);
    memcpy(&r.signal, buf + 28, 1);
    if (r.signal < -1 || r.signal > 1) return CELERIS_SIGNAL_ERR_SIGNAL;
    r.horizon_count = celeris_signal_load_u16(buf + 30);
    if (r.horizon_count > CELERIS_SIGNAL_MAX_HORIZON) return CELERIS_SIGNAL_ERR_HORIZON_COUNT;
    bits = celeris_signal_load_u32(buf + 32);
    r.confidence = celeris_signal_f32_from_bits(bits);
    if (!celeris_signal_f32_bits_finite(bits) || !(r.confidence >= 0.0f && r.confidence <= 1.0f)) {
        return CELERIS_SIGNAL_ERR_CONFIDENCE;
    }
    for (i = 0; i < CELERIS_SIGNAL_MAX_HORIZON; ++i) {
        bits = celeris_signal_load_u32(buf + 36 + 4 * i);
        if (i < r.horizon_count) {
            if (!celeris_signal_f32_bits_finite(bits)) return CELERIS_SIGNAL_ERR_FORECAST;
        } else if (bits != 0u) {
            return CELERIS_SIGNAL_ERR_UNUSED_FORECAST;
        }
        r.forecasts[i] = celeris_signal_f32_from_bits(bits);
    }
    r.model_version = celeris_signal_load_u32(buf + 100);
    *out = r;
    return CELERIS_SIGNAL_OK;
}

/* Encode `rec` into `buf` (128 bytes): magic, version, size, flags, reserved bytes, unused
 * forecast slots and the CRC are filled in; the caller sets the other fields. The values are
 * not checked: decode the result to check them. */
static inline void celeris_signal_encode(const celeris_signal_record *rec, uint8_t *buf) {
    uint64_t ts_bits;
    uint8_t signal_byte;
    size_t i;
    memset(buf, 0, CELERIS_SIGNAL_RECORD_SIZE);
    celeris_signal_store_u32(buf, CELERIS_SIGNAL_MAGIC);
    celeris_signal_store_u16(buf + 4, (uint16_t)CELERIS_SIGNAL_VERSION);
    celeris_signal_store_u16(buf + 6, (uint16_t)CELERIS_SIGNAL_RECORD_SIZE);
    celeris_signal_store_u64(buf + 8, rec->sequence);
    memcpy(&ts_bits, &rec->ts_ns, sizeof ts_bits);
    celeris_signal_store_u64(buf + 16, ts_bits);
    celeris_signal_store_u32(buf + 24, rec->symbol_id);
    memcpy(&signal_byte, &rec->signal, 1);
    buf[28] = signal_byte;
    celeris_signal_store_u16(buf + 30, rec->horizon_count);
    celeris_signal_store_u32(buf + 32, celeris_signal_f32_bits(rec->confidence));
    for (i = 0; i < rec->horizon_count && i < CELERIS_SIGNAL_MAX_HORIZON; ++i) {
        celeris_signal_store_u32(buf + 36 + 4 * i, celeris_signal_f32_bits(rec->forecasts[i]));
    }
    celeris_signal_store_u32(buf + 100, rec->model_version);
    celeris_signal_store_u32(buf + CELERIS_SIGNAL_CRC_OFFSET,
                             celeris_signal_crc32(buf, CELERIS_SIGNAL_CRC_OFFSET));
}

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* CELERIS_SIGNAL_H */
