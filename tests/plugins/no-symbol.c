/*
 * no-symbol.c: a test plugin (tests/27-sink-plugin.t) that is a shared
 * object but not a sink: it does not export sluice_sink_v1.
 */
int sluice_sink_v0(void);

int
sluice_sink_v0(void)
{
    return 0;
}
