#!/bin/sh
# runtime-libs.sh FOLDER ROOT: into ROOT, the files a FROM-scratch image needs beside the
# binary's one-folder build FOLDER: every shared library its ELF files load that the
# folder does not carry (the C library; libz for the bootloader), found by ldd with the
# folder's own library dirs first as at run time, plus the CA bundle, a passwd entry
# for the server's user (10001), /tmp and the folders of the volumes.
set -eu
folder=$1 root=$2
dirs=$(find "$folder" -name '*.so*' -type f -exec dirname {} + | sort -u | tr '\n' ':')
{
    # PyInstaller's bootloader starts before it points the loader at the folder (its
    # libz, say, must come from the system); everything else loads with the folder first.
    ldd "$folder/$(basename "$folder")"
    find "$folder" -type f | while read -r f; do
        [ "$(head -c 4 "$f" | tail -c 3)" = ELF ] || continue
        LD_LIBRARY_PATH=$dirs ldd "$f" 2>/dev/null || true
    done
} | sed -n 's/.*=> \(\/[^ ]*\) .*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) (0x.*/\1/p' \
    | grep -v "^$folder/" | sort -u > /tmp/libs
echo "libraries from the base image:"; cat /tmp/libs
# --parents keeps each library at the path the loader looks in; -L copies the file
# a soname link points at under the soname.
mkdir -p "$root"
xargs cp -L --parents -t "$root" < /tmp/libs
mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$root/app/models" "$root/app/data"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
chmod 1777 "$root/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\nedge:x:10001:10001:edge-llm:/app:/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\nedge:x:10001:\n' > "$root/etc/group"
