#!/bin/sh
# sql2c.sh NAME FILE: print FILE as a C string constant `sql_NAME`, so that
# the DDL of each sink is compiled into sluiced (see GNUmakefile).
set -eu
name=$1
file=$2
printf '/* generated from %s by contrib/sql2c.sh; do not edit */\n' "$file"
printf 'extern const char sql_%s[];\n' "$name"
printf 'const char sql_%s[] =\n' "$name"
sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/    "/' -e 's/$/\\n"/' "$file"
printf '    ;\n'
