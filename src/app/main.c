/* The spry command: parses the command line and calls the modules. */
#include <cblas.h>
#include <math.h>
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "spry/basemodel.h"
#include "spry/checkpoint.h"
#include "spry/config.h"
#include "spry/core.h"
#include "spry/federation.h"
#include "spry/mpi_util.h"
#include "spry/runlog.h"

#include "spry_git.h" /* SPRY_GIT_COMMIT, generated at build time by cmake/git_commit.cmake */

int spry_info_main(const char *path); /* src/app/info.c */
int spry_pretrain_main(const spry_config *cfg, const char *output, int force, int resume, int rank,
                       int size); /* src/app/pretrain.c */

static const char *usage =
    "usage: spry <command> [options]\n"
    "\n"
    "commands:\n"
    "  run       federated finetuning (rank 0 serves, every rank simulates a share of the clients)\n"
    "            spry run [[--config] FILE.ini] [--set section.key=value ...] [--quiet]\n"
    "                     [--output RUN.h5 [--force | --resume [--force]]]\n"
    "            --output: the run file (docs/runfile.md); checkpoints go to RUN.h5.ckpt. An existing run file is\n"
    "            never replaced without --force. --resume continues from the checkpoint (same configuration;\n"
    "            --force accepts a different one). SIGTERM / SIGUSR1: checkpoint at the end of the round, exit 4.\n"
    "  pretrain  causal-LM pretraining of the backbone (AdamW, data-parallel: the result does not depend on the\n"
    "            number of ranks): spry pretrain [[--config] FILE.ini] [--set section.key=value ...] [--quiet]\n"
    "                                            [--output BASE.h5] [--force | --resume]\n"
    "            writes the base model pretrain.output (what model.base reads; never replaced without --force);\n"
    "            checkpoints go to BASE.h5.ckpt, --resume continues from it. docs/pretraining.md\n"
    "  info      summary of run files: spry info RUN.h5 [MORE.h5 ...] (each in turn)\n"
    "  base-checksum  add the checksum (params_fnv1a64) to a base-model file written before it existed, or verify\n"
    "            it: spry base-checksum BASE.h5 (the weights are not changed)\n"
    "  config    print the resolved configuration (same options as run) and exit\n"
    "  version   print the version\n"
    "\n"
    "Run under MPI for several ranks: mpirun -n 3 spry run ...\n"
    "Configuration keys, presets and checks: docs/configuration.md\n";

typedef struct {
  const char *command;
  const char *config_path;
  const char **overrides;
  int n_overrides;
  int quiet;
  const char *output;
  int force, resume;
  const char *info_path;
  const char **info_paths; /* spry info A.h5 B.h5 ...: every file */
  int n_info;
} cli;

/* Parse argv; returns 0, or 2 with a message on stderr (rank 0 only prints). */
static int parse_cli(int argc, char **argv, cli *c, int rank) {
  memset(c, 0, sizeof *c);
  c->overrides = calloc((size_t)argc, sizeof(char *));
  c->info_paths = calloc((size_t)argc, sizeof(char *));
  if (argc < 2) {
    if (rank == 0) fputs(usage, stderr);
    return 2;
  }
  c->command = argv[1];
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    if ((strcmp(a, "--config") == 0 || strcmp(a, "-c") == 0) && i + 1 < argc) {
      c->config_path = argv[++i];
    } else if (strcmp(a, "--set") == 0 && i + 1 < argc) {
      c->overrides[c->n_overrides++] = argv[++i];
    } else if (strncmp(a, "--set=", 6) == 0) {
      c->overrides[c->n_overrides++] = a + 6;
    } else if (strcmp(a, "--quiet") == 0 || strcmp(a, "-q") == 0) {
      c->quiet = 1;
    } else if ((strcmp(a, "--output") == 0 || strcmp(a, "-o") == 0) && i + 1 < argc) {
      c->output = argv[++i];
    } else if (strncmp(a, "--output=", 9) == 0) {
      c->output = a + 9;
    } else if (strcmp(a, "--force") == 0) {
      c->force = 1;
    } else if (strcmp(a, "--resume") == 0) {
      c->resume = 1;
    } else if (a[0] != '-' && strcmp(c->command, "info") == 0) {
      if (!c->info_path) c->info_path = a;
      c->info_paths[c->n_info++] = a;
    } else if (a[0] != '-' && strcmp(c->command, "base-checksum") == 0 && !c->info_path) {
      c->info_path = a;
    } else if (a[0] != '-' && !c->config_path) {
      c->config_path = a; /* spry run my-run.ini */
    } else {
      if (rank == 0)
        fprintf(stderr, "spry %s: unknown or incomplete option '%s' (allowed: --config FILE, --set section.key=value, "
                        "--quiet, --output FILE, --force, --resume)\n%s", c->command, a, usage);
      return 2;
    }
  }
  return 0;
}

/* Rank 0 reads and validates the configuration; every rank gets it (or the failure) by broadcast. */
/* What sets the size of the big buffers: named by an out-of-memory message (core.h). */
static void set_alloc_hint(const spry_config *cfg) {
  char hint[1024];
  snprintf(hint, sizeof hint,
           "model.n_layer = %d, model.n_embd = %d, model.n_ctx = %d, model.vocab_size = %d, data.seq_len = %d, "
           "data.batch_size = %d, lora.rank = %d, method.K = %d, fl.clients = %d, fl.clients_per_round = %d, "
           "data.n_examples = %d (lower them, or run on a machine with more memory)",
           cfg->model.n_layer, cfg->model.n_embd, cfg->model.n_ctx, cfg->model.vocab_size, cfg->data.seq_len,
           cfg->data.batch_size, cfg->lora.rank, cfg->method.K, cfg->fl.clients, cfg->fl.clients_per_round,
           cfg->data.n_examples);
  spry_alloc_set_hint(hint);
}

static int load_config(const cli *c, spry_config *cfg, int rank) {
  int status = 0;
  if (rank == 0) {
    char err[SPRY_CONFIG_ERRLEN];
    const char *quiet_override = "run.quiet=true";
    const char **ov = calloc((size_t)c->n_overrides + 1, sizeof(char *));
    memcpy(ov, c->overrides, sizeof(char *) * (size_t)c->n_overrides);
    int n = c->n_overrides;
    if (c->quiet) ov[n++] = quiet_override;
    status = spry_config_load(cfg, c->config_path, ov, n, err, sizeof err);
    free(ov);
    if (status != SPRY_CONFIG_OK) fprintf(stderr, "spry: invalid configuration:\n%s\n", err);
  }
  SPRY_CHECK_MPI(MPI_Bcast(&status, 1, MPI_INT, 0, MPI_COMM_WORLD));
  if (status != SPRY_CONFIG_OK) return 2;
  SPRY_CHECK_MPI(MPI_Bcast(cfg, (int)sizeof *cfg, MPI_BYTE, 0, MPI_COMM_WORLD));
  set_alloc_hint(cfg);
  return 0;
}

static volatile sig_atomic_t stop_requested = 0;
static void on_stop_signal(int sig) {
  (void)sig;
  stop_requested = 1;
}

/* SIGTERM and SIGUSR1 (what Slurm sends before a time limit or preemption) ask for a checkpoint and a clean stop
 * at the end of the round in progress. */
static void install_stop_signals(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGUSR1, &sa, NULL);
}

/* Rank 0: 2 (with the message) if `output` is empty or it, or a file derived from it, is one of the inputs: the
 * configuration file, the dataset, the base model, the pretraining corpus. 0 otherwise. */
static int refuse_input_as_output(const char *cmd, const char *what, const char *output, const cli *c,
                                  const spry_config *cfg) {
  if (!output) return 0;
  if (!output[0]) {
    fprintf(stderr, "spry %s: %s is empty: give the path of the file to write\n", cmd, what);
    return 2;
  }
  const char *inputs[] = {c->config_path, cfg->data.dataset, cfg->model.base, cfg->pretrain.corpus};
  const char *names[] = {"configuration file", "dataset (data.dataset)", "base model (model.base)",
                         "pretraining corpus (pretrain.corpus)"};
  int i = spry_output_clash(output, inputs, 4);
  if (i < 0) return 0;
  fprintf(stderr, "spry %s: %s %s would overwrite the %s %s (the same file): an input is never overwritten, "
                  "whatever the flags; choose another output path\n", cmd, what, output, names[i], inputs[i]);
  return 2;
}

/* Rank 0: may the run file be created (or resumed)? On resume, reads the checkpoint into *ck and compares its
 * configuration with cfg. Returns 0, or 2 with the reason printed. note receives the forced differences. */
static int check_output(const cli *c, const spry_config *cfg, spry_checkpoint *ck, char *note, size_t notelen) {
  note[0] = 0;
  if (!c->output) {
    if (c->resume) {
      fprintf(stderr, "spry run: --resume needs --output RUN.h5 (the run file whose checkpoint RUN.h5.ckpt to continue)\n");
      return 2;
    }
    return 0;
  }
  if (refuse_input_as_output("run", "--output", c->output, c, cfg)) return 2;
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", c->output);
  char *slash = strrchr(dir, '/');
  if (slash == dir) dir[1] = 0;
  else if (slash) *slash = 0;
  else snprintf(dir, sizeof dir, ".");
  if (access(dir, W_OK) != 0) {
    fprintf(stderr, "spry run: --output %s: the directory %s does not exist or is not writable\n", c->output, dir);
    return 2;
  }
  if (!c->resume) {
    if (access(c->output, F_OK) == 0 && !c->force) {
      fprintf(stderr, "spry run: --output %s exists; it is never overwritten: use --force to replace it, or --resume "
                      "to continue its run\n", c->output);
      return 2;
    }
    return 0;
  }
  char path[4200], err[4600];
  spry_checkpoint_path(c->output, path, sizeof path);
  if (access(c->output, F_OK) != 0) {
    fprintf(stderr, "spry run --resume: the run file %s does not exist\n", c->output);
    return 2;
  }
  if (spry_checkpoint_read(path, ck, err, sizeof err) != 0) {
    fprintf(stderr, "spry run --resume: %s\n", err);
    return 2;
  }
  spry_config old;
  char perr[SPRY_CONFIG_ERRLEN];
  if (spry_config_parse(&old, ck->config_text, path, NULL, 0, perr, sizeof perr) != SPRY_CONFIG_OK) {
    fprintf(stderr, "spry run --resume: the configuration stored in %s does not parse:\n%s\n", path, perr);
    return 2;
  }
  char diff[4096];
  int nd = spry_config_diff(&old, cfg, true, diff, sizeof diff);
  if (nd > 0 && !c->force) {
    fprintf(stderr,
            "spry run --resume: the configuration differs from the checkpoint's (%s) in %d key(s): %s\n"
            "resume with the same configuration, or add --force to continue with the new one\n",
            path, nd, diff);
    return 2;
  }
  if (nd > 0) snprintf(note, notelen, "forced with a different configuration: %s", diff);
  if (ck->d == 0 || ck->rounds_done > (uint32_t)cfg->run.rounds) {
    fprintf(stderr, "spry run --resume: %s holds %u finished rounds but run.rounds = %d\n", path, ck->rounds_done,
            cfg->run.rounds);
    return 2;
  }
  return 0;
}

static int cmd_run(const cli *c, int rank, int size) {
  spry_config cfg;
  if (load_config(c, &cfg, rank)) return 2;
  if (cfg.run.threads > 0) openblas_set_num_threads(cfg.run.threads);
  spry_checkpoint ck;
  memset(&ck, 0, sizeof ck);
  char note[4200] = "";
  int status = 0;
  if (rank == 0) status = check_output(c, &cfg, &ck, note, sizeof note);
  SPRY_CHECK_MPI(MPI_Bcast(&status, 1, MPI_INT, 0, MPI_COMM_WORLD));
  if (status != 0) return status;
  uint32_t first_round = c->resume ? ck.rounds_done : 0;
  uint64_t ck_hash = ck.config_hash;
  SPRY_CHECK_MPI(MPI_Bcast(&first_round, 1, MPI_UINT32_T, 0, MPI_COMM_WORLD));
  SPRY_CHECK_MPI(MPI_Bcast(&ck_hash, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD));
  SPRY_CHECK_MPI(MPI_Bcast(note, (int)sizeof note, MPI_CHAR, 0, MPI_COMM_WORLD));
  install_stop_signals();
  if (rank == 0) {
    printf("# spry %s: %d rank(s); resolved configuration:\n", SPRY_VERSION, size);
    spry_config_print(stdout, &cfg);
    if (c->resume) printf("# resuming %s at round %u%s%s\n", c->output, first_round, note[0] ? "; " : "", note);
    fflush(stdout);
  }
  double t0 = spry_now();
  spry_fed *f = spry_fed_create(&cfg, MPI_COMM_WORLD);
  char err[4600] = "";
  if (c->resume) {
    if (rank == 0) status = spry_fed_restore(f, &ck, err, sizeof err) != 0 ? 2 : 0;
    SPRY_CHECK_MPI(MPI_Bcast(&status, 1, MPI_INT, 0, MPI_COMM_WORLD));
    if (rank == 0 && status) fprintf(stderr, "spry run --resume: %s.ckpt: %s\n", c->output, err);
  }
  spry_checkpoint_release(&ck);
  spry_runlog *log = NULL;
  if (status == 0 && c->output) {
    spry_runlog_options lo = {.path = c->output, .cfg = &cfg, .model = spry_fed_model(f),
                              .ds = spry_fed_dataset(f), .part = spry_fed_partition(f), .comm = MPI_COMM_WORLD,
                              .overwrite = c->force, .resume = c->resume, .resume_rounds = first_round,
                              .resume_config_hash = ck_hash, .force = c->force, .resume_note = note,
                              .git_commit = SPRY_GIT_COMMIT};
    log = spry_runlog_open(&lo, err, sizeof err);
    if (!log) {
      if (rank == 0) fprintf(stderr, "spry run: %s\n", err);
      status = 2;
    } else {
      char ckpt[4200];
      spry_checkpoint_path(c->output, ckpt, sizeof ckpt);
      spry_fed_set_checkpoint(f, ckpt);
    }
  }
  if (status != 0) {
    spry_fed_free(&f);
    return status;
  }
  spry_fed_set_stop_flag(f, &stop_requested);
  spry_fed_observer obs = {0};
  if (log) obs = spry_runlog_observer(log);
  status = spry_fed_run(f, first_round, log ? &obs : NULL);
  double log_seconds = log ? spry_runlog_seconds(log) : 0;
  if (log) spry_runlog_close(&log, status, spry_fed_weights(f));
  if (rank == 0) {
    const spry_dataset *ds = spry_fed_dataset(f);
    double acc = spry_fed_final_accuracy(f);
    if (status == SPRY_RUN_OK) {
      printf("done: %d rounds in %.1f s; final %s accuracy %.2f%% (chance %.2f%%, %d classes, %s)\n",
             cfg.run.rounds, spry_now() - t0,
             cfg.data.validation_fraction > 0 ? "validation-set (data.validation_fraction)" : "held-out", 100 * acc,
             100.0 / ds->n_class, ds->n_class, ds->source);
      printf("held-out loss: initial %.6f final %.6f\n", spry_fed_initial_loss(f), spry_fed_final_loss(f));
      if (cfg.eval.personalize_epochs > 0 && !isnan(spry_fed_final_personal_accuracy(f)))
        printf("personalised local accuracy (%d local epochs from the final global model, the participants of the "
               "last evaluated round; not the held-out accuracy above): %.2f%%\n",
               cfg.eval.personalize_epochs, 100 * spry_fed_final_personal_accuracy(f));
      printf("fingerprint: weights %016llx metrics %016llx\n",
             (unsigned long long)spry_fnv1a(spry_fed_weights(f), sizeof(float) * spry_model_n_trainable(spry_fed_model(f)), 0),
             (unsigned long long)spry_fed_metrics_hash(f));
      if (spry_fed_verified_rebuilds(f) > 0)
        printf("server rebuilds of per-iteration estimates: %ld checked, all bitwise equal to the clients' own\n",
               spry_fed_verified_rebuilds(f));
    } else if (status == SPRY_RUN_STOPPED) {
      fprintf(stderr, "spry: run stopped by a signal (status %d)%s\n", status,
              c->output ? "; continue it with the same command and --resume" : "");
    } else {
      fprintf(stderr, "spry: run stopped (status %d) after a non-finite value; see the message above\n", status);
    }
    if (c->output) printf("run file: %s (%.3f s spent writing it)\n", c->output, log_seconds);
  }
  spry_fed_free(&f);
  return status;
}

static int cmd_config(const cli *c, int rank) {
  spry_config cfg;
  if (load_config(c, &cfg, rank)) return 2;
  if (rank == 0) spry_config_print(stdout, &cfg);
  return 0;
}

int main(int argc, char **argv) {
  spry_mpi_preinit(); /* an MPI-IO layer that reports write errors */
  MPI_Init(&argc, &argv);
  spry_mpi_install_abort();
  int rank, size;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  cli c;
  int rc = parse_cli(argc, argv, &c, rank);
  if (rc == 0) {
    if (strcmp(c.command, "run") == 0) {
      rc = cmd_run(&c, rank, size);
    } else if (strcmp(c.command, "config") == 0) {
      rc = cmd_config(&c, rank);
    } else if (strcmp(c.command, "pretrain") == 0) {
      spry_config cfg;
      rc = load_config(&c, &cfg, rank) ? 2 : 0;
      if (rc == 0) {
        if (rank == 0)
          rc = refuse_input_as_output("pretrain", c.output ? "--output" : "pretrain.output",
                                      c.output ? c.output : cfg.pretrain.output, &c, &cfg);
        SPRY_CHECK_MPI(MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD));
      }
      if (rc == 0) rc = spry_pretrain_main(&cfg, c.output, c.force, c.resume, rank, size);
    } else if (strcmp(c.command, "info") == 0) {
      if (!c.info_path) {
        if (rank == 0) fprintf(stderr, "spry info: which run file? usage: spry info RUN.h5\n");
        rc = 2;
      } else {
        rc = 0;
        for (int i = 0; rank == 0 && i < c.n_info; i++) { /* each file in turn; the worst status */
          if (i) printf("\n");
          int r = spry_info_main(c.info_paths[i]);
          if (r > rc) rc = r;
        }
        SPRY_CHECK_MPI(MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD));
      }
    } else if (strcmp(c.command, "base-checksum") == 0) {
      if (!c.info_path) {
        if (rank == 0) fprintf(stderr, "spry base-checksum: which base-model file? usage: spry base-checksum BASE.h5\n");
        rc = 2;
      } else {
        rc = rank == 0 ? spry_base_checksum_main(c.info_path) : 0;
        SPRY_CHECK_MPI(MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD));
      }
    } else if (strcmp(c.command, "version") == 0 || strcmp(c.command, "--version") == 0) {
      if (rank == 0) printf("spry %s\n", SPRY_VERSION);
    } else if (strcmp(c.command, "help") == 0 || strcmp(c.command, "--help") == 0 || strcmp(c.command, "-h") == 0) {
      if (rank == 0) fputs(usage, stdout);
    } else {
      if (rank == 0) fprintf(stderr, "spry: unknown command '%s'\n%s", c.command, usage);
      rc = 2;
    }
  }
  free(c.overrides);
  free(c.info_paths);
  MPI_Finalize();
  return rc;
}
