/*
 * signal_consumer.c - a minimal trading-engine side of the Celeris signal feed.
 *
 * Build:  cc -std=c11 -O2 -Wall -Wextra -Iinclude examples/signal_consumer.c -o signal_consumer
 *
 *   signal_consumer --socket PATH [COUNT]  connect to a publisher, print COUNT records (default:
 *                                          until the publisher closes), then a gap summary
 *   signal_consumer --file PATH            decode a file of back-to-back records
 *   signal_consumer --layout               print sizeof and the offset of every field
 *   signal_consumer --encode               print the hex of the worked example record
 *   signal_consumer --crc TEXT             print the CRC-32 of TEXT
 *
 * Records print as one line: "record seq=.. ts_ns=.. symbol=.. signal=.. confidence=..
 * model_version=.. forecasts=a,b,c" (floats with 9 significant digits: exact for float32).
 * A record that fails its checks prints "error index=N status=NAME" and the exit code is 3.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "celeris_signal.h"

static void print_record(const celeris_signal_record *r) {
    unsigned i;
    printf("record seq=%" PRIu64 " ts_ns=%" PRId64 " symbol=%" PRIu32 " signal=%d confidence=%.9g"
           " model_version=%" PRIu32 " forecasts=",
           r->sequence, r->ts_ns, r->symbol_id, (int)r->signal, (double)r->confidence,
           r->model_version);
    for (i = 0; i < r->horizon_count; ++i) {
        printf(i ? ",%.9g" : "%.9g", (double)r->forecasts[i]);
    }
    printf("\n");
}

/* Read exactly n bytes: 1 on success, 0 on a clean end of stream, -1 on error or a cut-off. */
static int read_exact(int fd, uint8_t *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t k = read(fd, buf + got, n - got);
        if (k == 0) return got == 0 ? 0 : -1;
        if (k < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        got += (size_t)k;
    }
    return 1;
}

static int consume_socket(const char *path, long count) {
    struct sockaddr_un addr;
    uint8_t hello_buf[CELERIS_SIGNAL_HELLO_SIZE];
    uint8_t buf[CELERIS_SIGNAL_RECORD_SIZE];
    celeris_signal_hello hello;
    celeris_signal_record rec;
    celeris_signal_status st;
    uint64_t expected, gaps = 0, missed = 0, received = 0;
    int fd, rc, status = 0;

    if (strlen(path) >= sizeof addr.sun_path) {
        fprintf(stderr, "socket path too long: %s\n", path);
        return 2;
    }
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path, path, strlen(path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (const struct sockaddr *)&addr, sizeof addr) != 0) {
        perror("connect");
        return 2;
    }
    if (read_exact(fd, hello_buf, sizeof hello_buf) != 1) {
        fprintf(stderr, "no hello from the publisher\n");
        close(fd);
        return 2;
    }
    st = celeris_signal_decode_hello(hello_buf, sizeof hello_buf, &hello);
    if (st != CELERIS_SIGNAL_OK) {
        /* An unknown version or a wrong magic: do not guess at the layout, disconnect. */
        printf("error index=hello status=%s\n", celeris_signal_status_name(st));
        close(fd);
        return 3;
    }
    printf("hello version=%u record_size=%u next_sequence=%" PRIu64 "\n", (unsigned)hello.version,
           (unsigned)hello.record_size, hello.next_sequence);
    fflush(stdout);
    expected = hello.next_sequence;
    while (count < 0 || received < (uint64_t)count) {
        rc = read_exact(fd, buf, sizeof buf);
        if (rc == 0) break;
        if (rc < 0) {
            fprintf(stderr, "stream cut inside a record\n");
            break;
        }
        st = celeris_signal_decode(buf, sizeof buf, &rec);
        if (st != CELERIS_SIGNAL_OK) {
            printf("error index=%" PRIu64 " status=%s\n", received, celeris_signal_status_name(st));
            status = 3;
            break; /* a bad record on a stream means it is out of step: stop */
        }
        if (rec.sequence < expected) {
            printf("error index=%" PRIu64 " status=sequence\n", received);
            status = 3;
            break;
        }
        if (rec.sequence > expected) {
            gaps += 1;
            missed += rec.sequence - expected;
        }
        expected = rec.sequence + 1;
        received += 1;
        print_record(&rec);
        fflush(stdout);
    }
    printf("summary received=%" PRIu64 " gaps=%" PRIu64 " missed=%" PRIu64 "\n", received, gaps,
           missed);
    close(fd);
    return status;
}

static int consume_file(const char *path) {
    FILE *f = fopen(path, "rb");
    uint8_t buf[CELERIS_SIGNAL_RECORD_SIZE];
    celeris_signal_record rec;
    celeris_signal_status st;
    unsigned long index = 0;
    size_t n;
    int status = 0;
    if (!f) {
        perror("fopen");
        return 2;
    }
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        st = celeris_signal_decode(buf, n, &rec);
        if (st == CELERIS_SIGNAL_OK) {
            print_record(&rec);
        } else {
            printf("error index=%lu status=%s\n", index, celeris_signal_status_name(st));
            status = 3;
        }
        ++index;
    }
    fclose(f);
    return status;
}

#define FIELD(name) printf("%s %zu %zu\n", #name, offsetof(celeris_signal_record, name), \
                           sizeof(((celeris_signal_record *)0)->name))

static int print_layout(void) {
    printf("sizeof %zu\n", sizeof(celeris_signal_record));
    printf("hello_sizeof %zu\n", sizeof(celeris_signal_hello));
    FIELD(magic);
    FIELD(version);
    FIELD(record_size);
    FIELD(sequence);
    FIELD(ts_ns);
    FIELD(symbol_id);
    FIELD(signal);
    FIELD(flags);
    FIELD(horizon_count);
    FIELD(confidence);
    FIELD(forecasts);
    FIELD(model_version);
    FIELD(reserved);
    FIELD(crc32);
    return 0;
}

/* The worked example of docs/wire-format.md, encoded by the header's encoder. */
static int print_example(void) {
    celeris_signal_record rec;
    uint8_t buf[CELERIS_SIGNAL_RECORD_SIZE];
    celeris_signal_record back;
    unsigned i;
    memset(&rec, 0, sizeof rec);
    rec.sequence = 1;
    rec.ts_ns = INT64_C(1700000000123456789);
    rec.symbol_id = 42;
    rec.signal = CELERIS_SIGNAL_LONG;
    rec.horizon_count = 3;
    rec.confidence = 0.75f;
    rec.forecasts[0] = 0.001f;
    rec.forecasts[1] = 0.0025f;
    rec.forecasts[2] = -0.0005f;
    rec.model_version = 7;
    celeris_signal_encode(&rec, buf);
    if (celeris_signal_decode(buf, sizeof buf, &back) != CELERIS_SIGNAL_OK) return 3;
    for (i = 0; i < sizeof buf; ++i) printf("%02x", buf[i]);
    printf("\n");
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "--socket") == 0) {
        return consume_socket(argv[2], argc >= 4 ? strtol(argv[3], NULL, 10) : -1);
    }
    if (argc == 3 && strcmp(argv[1], "--file") == 0) return consume_file(argv[2]);
    if (argc == 2 && strcmp(argv[1], "--layout") == 0) return print_layout();
    if (argc == 2 && strcmp(argv[1], "--encode") == 0) return print_example();
    if (argc == 3 && strcmp(argv[1], "--crc") == 0) {
        printf("%08" PRIx32 "\n", celeris_signal_crc32((const uint8_t *)argv[2], strlen(argv[2])));
        return 0;
    }
    fprintf(stderr, "usage: %s --socket PATH [COUNT] | --file PATH | --layout | --encode | --crc TEXT\n",
            argv[0]);
    return 2;
}
