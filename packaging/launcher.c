/* One-file launcher for a PyInstaller one-folder build.
 *
 * Layout of the executable: [this program][payload][trailer]. The payload is
 * the folder as records (kind, mode, path, bytes); the trailer says where the
 * payload starts, its SHA-256 and the program to run inside it. On the first
 * start the payload is unpacked to $XDG_CACHE_HOME/edge-llm/<name>-<sha256>
 * (~/.cache/edge-llm/...), its SHA-256 checked while it is read, into a
 * temporary folder renamed into place when complete; every later start finds
 * the folder and execs the program at once. So nothing is rewritten per start
 * (a PyInstaller one-file build unpacks everything to /tmp on every start) and
 * a noexec /tmp does not matter. A different build has a different SHA-256, so
 * it never runs a stale folder; `rm -rf ~/.cache/edge-llm` clears them all.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAGIC "EDGELLM1"
#define TRAILER_SIZE 256

struct trailer { /* 256 bytes, little-endian integers, written by pack.py */
    char magic[8];
    uint64_t offset, size;
    char sha256[65];  /* hex, NUL-terminated */
    char entry[159];  /* program inside the folder, NUL-terminated */
};

/* ---- SHA-256 (FIPS 180-4) ---- */
typedef struct { uint32_t h[8]; uint64_t len; unsigned char buf[64]; size_t n; } sha256_ctx;
static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
static void sha256_block(sha256_ctx *c, const unsigned char *p) {
    uint32_t w[64], a, b, d, e, f, g, h, cc, t1, t2;
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    a = c->h[0]; b = c->h[1]; cc = c->h[2]; d = c->h[3]; e = c->h[4]; f = c->h[5]; g = c->h[6]; h = c->h[7];
    for (int i = 0; i < 64; i++) {
        t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & cc) ^ (b & cc));
        h = g; g = f; f = e; e = d + t1; d = cc; cc = b; b = a; a = t1 + t2;
    }
    c->h[0] += a; c->h[1] += b; c->h[2] += cc; c->h[3] += d; c->h[4] += e; c->h[5] += f; c->h[6] += g; c->h[7] += h;
}
static void sha256_init(sha256_ctx *c) {
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(c->h, h0, sizeof h0); c->len = 0; c->n = 0;
}
static void sha256_update(sha256_ctx *c, const unsigned char *p, size_t n) {
    c->len += n;
    while (n) {
        size_t take = 64 - c->n < n ? 64 - c->n : n;
        memcpy(c->buf + c->n, p, take); c->n += take; p += take; n -= take;
        if (c->n == 64) { sha256_block(c, c->buf); c->n = 0; }
    }
}
static void sha256_hex(sha256_ctx *c, char out[65]) {
    uint64_t bits = c->len * 8;
    unsigned char pad = 0x80, zero = 0, len[8];
    sha256_update(c, &pad, 1);
    while (c->n != 56) sha256_update(c, &zero, 1);
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)(bits >> (56 - 8 * i));
    sha256_update(c, len, 8);
    for (int i = 0; i < 8; i++) sprintf(out + 8 * i, "%08x", c->h[i]);
}

/* ---- unpacking ---- */
static void die(const char *what, const char *detail) {
    fprintf(stderr, "edge-llm launcher: %s%s%s%s%s\n", what, detail ? ": " : "", detail ? detail : "",
            errno ? ": " : "", errno ? strerror(errno) : "");
    exit(127);
}

static sha256_ctx hash;
static void read_exact(FILE *f, void *buf, size_t n) {
    if (fread(buf, 1, n, f) != n) die("the payload is truncated", NULL);
    sha256_update(&hash, buf, n);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

static void mkdirs(char *path) {
    for (char *p = path + 1; *p; p++)
        if (*p == '/') { *p = 0; mkdir(path, 0755); *p = '/'; }
    if (mkdir(path, 0755) && errno != EEXIST) die("cannot create", path);
    errno = 0;
}

static void unpack(FILE *f, const struct trailer *t, const char *tmp) {
    static unsigned char block[1 << 20];
    char path[PATH_MAX], rel[PATH_MAX], digest[65];
    uint64_t left = t->size;
    sha256_init(&hash);
    if (fseeko(f, (off_t)t->offset, SEEK_SET)) die("cannot seek in the executable", NULL);
    while (left) {
        uint32_t head[3]; /* kind (0 file, 1 folder, 2 symlink), mode, path length */
        uint64_t size;
        read_exact(f, head, sizeof head);
        read_exact(f, &size, sizeof size);
        if (head[2] >= sizeof rel) die("a path in the payload is too long", NULL);
        read_exact(f, rel, head[2]);
        rel[head[2]] = 0;
        snprintf(path, sizeof path, "%s/%s", tmp, rel);
        left -= sizeof head + sizeof size + head[2] + size;
        if (head[0] == 1) { mkdirs(path); continue; }
        if (head[0] == 2) {
            char target[PATH_MAX];
            if (size >= sizeof target) die("a link in the payload is too long", rel);
            read_exact(f, target, size);
            target[size] = 0;
            if (symlink(target, path)) die("cannot create link", path);
            continue;
        }
        int out = open(path, O_WRONLY | O_CREAT | O_EXCL, head[1] & 0777);
        if (out < 0) die("cannot create", path);
        for (uint64_t n = size; n;) {
            size_t take = n < sizeof block ? (size_t)n : sizeof block;
            read_exact(f, block, take);
            if (write(out, block, take) != (ssize_t)take) die("cannot write", path);
            n -= take;
        }
        if (close(out)) die("cannot write", path);
    }
    sha256_hex(&hash, digest);
    if (strcmp(digest, t->sha256)) {
        errno = 0;
        die("the executable is damaged (payload SHA-256 differs); copy it again", NULL);
    }
}

int main(int argc, char **argv) {
    (void)argc;
    char self[PATH_MAX], base[PATH_MAX], folder[PATH_MAX], tmp[PATH_MAX], program[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n < 0) die("cannot find its own executable", NULL);
    self[n] = 0;
    FILE *f = fopen(self, "rb");
    struct trailer t;
    if (!f || fseeko(f, -TRAILER_SIZE, SEEK_END) || fread(&t, 1, sizeof t, f) != sizeof t ||
        memcmp(t.magic, MAGIC, 8))
        die("no payload in", self);
    t.sha256[64] = 0;
    t.entry[sizeof t.entry - 1] = 0;

    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    struct passwd *pw = getpwuid(getuid());
    if (xdg && xdg[0] == '/') snprintf(base, sizeof base, "%s/edge-llm", xdg);
    else if (home && home[0] == '/') snprintf(base, sizeof base, "%s/.cache/edge-llm", home);
    else if (pw) snprintf(base, sizeof base, "%s/.cache/edge-llm", pw->pw_dir);
    else die("no cache folder: set XDG_CACHE_HOME", NULL);
    const char *slash = strchr(t.entry, '/');
    int name_len = slash ? (int)(slash - t.entry) : (int)strlen(t.entry);
    snprintf(folder, sizeof folder, "%s/%.*s-%.16s", base, name_len, t.entry, t.sha256);
    snprintf(program, sizeof program, "%s/%s", folder, slash ? slash + 1 : t.entry);

    if (access(program, X_OK)) {
        snprintf(tmp, sizeof tmp, "%s/.unpacking-%ld", base, (long)getpid());
        mkdirs(base);
        nftw(tmp, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
        mkdirs(tmp);
        fprintf(stderr, "edge-llm launcher: unpacking once to %s\n", folder);
        unpack(f, &t, tmp);
        if (rename(tmp, folder)) { /* another start won the race: use its folder */
            nftw(tmp, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
            errno = 0;
        }
    }
    fclose(f);
    execv(program, argv);
    die("cannot run", program);
}
