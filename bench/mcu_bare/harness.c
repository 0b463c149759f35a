/*
 * bench/mcu_bare: instructions per kernel call on qemu's mps2-an385 under -icount shift=0,
 * without MicroPython. bench/mcu.py generates cases.h (each case: a kernel call on fixed random
 * data and the numpy twin's output for it; optionally a whole .etm model with its training
 * step), builds this file with the kernels for one instruction set (-mcpu=cortex-m3 or
 * -mcpu=cortex-m0plus) and runs it. SysTick counts the guest clock (one instruction per
 * nanosecond under -icount shift=0); its rate in instructions is calibrated with a loop of a
 * known instruction count. Each case is first checked bit for bit against the twin's output.
 * Output: one "BENCH {json}" line per measurement (semihosting).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "et_kernels.h"

void bench_puts(const char *s);

typedef struct {
    const char *name;
    void (*call)(void);
    const int8_t *out;
    const int8_t *expect;
    uint32_t n_out;
    uint32_t reps;
} bench_case_t;

#define SYST_CSR (*(volatile uint32_t *)0xE000E010)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018)

static void nop_call(void) {
}

/* 2 instructions per iteration (subs + bne), n iterations */
__attribute__((noinline, naked)) static void spin(uint32_t n) {
    (void)n;
    __asm__ volatile(
        ".syntax unified\n"
        "1: subs r0, r0, #1\n"
        "   bne 1b\n"
        "   bx lr\n");
}

static uint32_t ticks_of(void (*f)(void), uint32_t reps) {
    const uint32_t t0 = SYST_CVR;
    for (uint32_t r = 0; r < reps; ++r) {
        f();
    }
    const uint32_t t1 = SYST_CVR;
    return (t0 - t1) & 0xFFFFFF;
}

static uint32_t spin_ticks(uint32_t n) {
    const uint32_t t0 = SYST_CVR;
    spin(n);
    const uint32_t t1 = SYST_CVR;
    return (t0 - t1) & 0xFFFFFF;
}

static char line[256];

#include "cases.h"

#ifdef BENCH_MODEL
/*
 * The whole-model case: MODEL_ETM (an .etm file) with its own scheme (or the default one),
 * Model.predict's path (et_train_forward, save 0) and Model.train's step (et_train_step, plain
 * SGD), label k % classes at the k-th step. The predict output is checked against the twin's
 * (MODEL_EXPECT); after the timed steps a CRC of the predict output shows the trained state.
 */
#include "model.h"
#include "scheme.h"
#include "train.h"

static et_model_t model;
static et_train_layer_t tlayers[ET_MAX_LAYERS];
static et_train_t tr;
static uint8_t arena[MODEL_ARENA_MAX] __attribute__((aligned(8)));
static uint32_t step_k;

static void model_forward(void) {
    (void)et_train_forward(&tr, (const int8_t *)MODEL_INPUT, 0);
}

static void model_step(void) {
    (void)et_train_step(&tr, (const int8_t *)MODEL_INPUT, (int32_t)(step_k++ % MODEL_CLASSES), 0.01f, 0);
}

static int bench_model(void) {
    char err[192];
    const char *msg = et_model_init(&model, MODEL_ETM, sizeof MODEL_ETM, err, sizeof err);
    et_scheme_layer_t sl[ET_MAX_LAYERS];
    if (!msg) {
        if (model.scheme_off) {
            msg = et_scheme_parse(&model, sl, err, sizeof err);
        } else {
            et_scheme_default(&model, sl);
        }
    }
    if (!msg) {
        for (unsigned i = 0; i < model.n_layers; ++i) {
            tlayers[i].s = sl[i];
        }
        msg = et_train_plan(&tr, &model, tlayers, 0.0f, err, sizeof err);
    }
    if (!msg && tr.arena_size > sizeof arena) {
        msg = "arena too small (raise MODEL_ARENA_MAX)";
    }
    if (msg) {
        snprintf(line, sizeof line, "BENCH {\"kind\": \"error\", \"message\": \"%s\"}\n", msg);
        bench_puts(line);
        return 1;
    }
    tr.m = &model;
    tr.layers = tlayers;
    et_train_init(&tr, arena);
    const int8_t *y = et_train_forward(&tr, (const int8_t *)MODEL_INPUT, 0);
    const size_t n_out = et_model_output_size(&model);
    const int same = n_out == sizeof MODEL_EXPECT && memcmp(y, MODEL_EXPECT, n_out) == 0;
    const uint32_t loop = ticks_of(nop_call, MODEL_REPS);
    const uint32_t tf = ticks_of(model_forward, MODEL_REPS);
    const uint32_t ts = ticks_of(model_step, MODEL_REPS);
    y = et_train_forward(&tr, (const int8_t *)MODEL_INPUT, 0);
    snprintf(line, sizeof line,
        "BENCH {\"kind\": \"model\", \"reps\": %lu, \"forward\": %lu, \"step\": %lu, \"loop\": %lu, "
        "\"same_bits\": %s, \"arena\": %lu, \"trained_crc\": %lu}\n",
        (unsigned long)MODEL_REPS, (unsigned long)tf, (unsigned long)ts, (unsigned long)loop, same ? "true" : "false",
        (unsigned long)tr.arena_size, (unsigned long)et_crc32(0, (const uint8_t *)y, n_out));
    bench_puts(line);
    return !same;
}
#endif

int main(void) {
    SYST_CSR = 0;
    SYST_RVR = 0xFFFFFF;
    SYST_CVR = 0;
    SYST_CSR = 5; /* enabled, processor clock, no interrupt */
    const uint32_t a = spin_ticks(100000), b = spin_ticks(1100000);
    snprintf(line, sizeof line, "BENCH {\"kind\": \"calibrate\", \"ticks\": %lu, \"instructions\": 2000000}\n",
        (unsigned long)(b - a));
    bench_puts(line);
    int bad = 0;
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; ++i) {
        const bench_case_t *c = &CASES[i];
        c->call();
        const int same = memcmp(c->out, c->expect, c->n_out) == 0;
        bad |= !same;
        const uint32_t loop = ticks_of(nop_call, c->reps);
        const uint32_t t = ticks_of(c->call, c->reps);
        snprintf(line, sizeof line,
            "BENCH {\"kind\": \"case\", \"name\": \"%s\", \"reps\": %lu, \"ticks\": %lu, \"loop\": %lu, "
            "\"same_bits\": %s}\n",
            c->name, (unsigned long)c->reps, (unsigned long)t, (unsigned long)loop, same ? "true" : "false");
        bench_puts(line);
    }
#ifdef BENCH_MODEL
    bad |= bench_model();
#endif
    return bad;
}
