// libFuzzer harness for the patched loader: each input is a whole GGUF file, loaded with
// llama_model_load_from_file (CPU, no mmap) and freed. The custom mutator parses the GGUF and
// changes one thing a converter or a damaged file could get wrong: a tensor's shape, type, offset
// or name, a metadata value or type (ggufsparse.* keys first), the values inside a tensor
// (thresholds, N:M positions, permutations, predictor weights), or, one time in six, raw bytes.
// Build and run: scripts/sanitize.py; docs/fuzzing.md.

#include "llama.h"
#include "ggml.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <unordered_set>
#include <vector>

extern "C" size_t LLVMFuzzerMutate(uint8_t * data, size_t size, size_t max_size);

// ---- a minimal GGUF reader and writer (the layout of ggml/include/gguf.h, version 2 and 3) ----

namespace {

enum : uint32_t {
    T_U8, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32, T_BOOL, T_STRING, T_ARRAY, T_U64, T_I64, T_F64, T_COUNT
};

size_t scalar_size(uint32_t type) {
    switch (type) {
        case T_U8: case T_I8: case T_BOOL: return 1;
        case T_U16: case T_I16: return 2;
        case T_U32: case T_I32: case T_F32: return 4;
        case T_U64: case T_I64: case T_F64: return 8;
        default: return 0;
    }
}

struct kv {
    std::string key;
    uint32_t type;
    std::vector<uint8_t> value;  // the value's bytes as stored after its type
};

struct tensor {
    std::string name;
    std::vector<int64_t> ne;
    uint32_t type;
    uint64_t offset;
};

struct file {
    uint32_t version = 3;
    std::vector<kv> kvs;
    std::vector<tensor> tensors;
    // everything after the tensor infos' alignment padding, left where it is in the input (the
    // mutator changes values there and moves it once behind the rewritten header)
    uint8_t * data = nullptr;
    size_t data_size = 0;
    size_t alignment = 32;
    uint64_t n_tensors = 0;  // as the header says (parse_kvs)
};

struct reader {
    const uint8_t * p;
    size_t n, pos = 0;
    bool ok = true;

    bool take(void * dst, size_t k) {
        if (!ok || k > n - pos) {
            return ok = false;
        }
        memcpy(dst, p + pos, k);
        pos += k;
        return true;
    }
    template <typename T> T get() {
        T v{};
        take(&v, sizeof(v));
        return v;
    }
    std::string str() {
        const uint64_t len = get<uint64_t>();
        if (!ok || len > n - pos) {
            ok = false;
            return {};
        }
        std::string s((const char *) p + pos, len);
        pos += len;
        return s;
    }
    // the bytes of one value of the type (arrays whole), appended to out unless it is null
    bool value(uint32_t type, std::vector<uint8_t> * out) {
        const size_t start = pos;
        if (type == T_STRING) {
            str();
        } else if (type == T_ARRAY) {
            const uint32_t et = get<uint32_t>();
            const uint64_t count = get<uint64_t>();
            if (!ok || et == T_ARRAY || et >= T_COUNT || count > n) {
                return ok = false;
            }
            if (et == T_STRING) {
                for (uint64_t i = 0; i < count && ok; ++i) {
                    str();
                }
            } else {
                const size_t es = scalar_size(et);
                if (es == 0 || count > (n - pos) / es) {
                    return ok = false;
                }
                pos += es * count;
            }
        } else {
            const size_t s = scalar_size(type);
            if (s == 0 || s > n - pos) {
                return ok = false;
            }
            pos += s;
        }
        if (ok && out) {
            out->insert(out->end(), p + start, p + pos);
        }
        return ok;
    }
};

// the header and the key-value pairs; r is left at the tensor infos
bool parse_kvs(reader & r, file & f) {
    const size_t size = r.n;
    char magic[4];
    if (!r.take(magic, 4) || memcmp(magic, "GGUF", 4) != 0) {
        return false;
    }
    f.version = r.get<uint32_t>();
    const uint64_t n_tensors = r.get<uint64_t>();
    const uint64_t n_kv = r.get<uint64_t>();
    if (!r.ok || n_tensors > size / 8 || n_kv > size / 8) {
        return false;
    }
    for (uint64_t i = 0; i < n_kv && r.ok; ++i) {
        kv k;
        k.key = r.str();
        k.type = r.get<uint32_t>();
        if (!r.ok || !r.value(k.type, &k.value)) {
            return false;
        }
        if (k.key == "general.alignment" && k.type == T_U32) {
            uint32_t a;
            memcpy(&a, k.value.data(), 4);
            f.alignment = a;
        }
        f.kvs.push_back(std::move(k));
    }
    f.n_tensors = n_tensors;
    return r.ok;
}

bool parse(const uint8_t * data, size_t size, file & f) {
    reader r{data, size};
    if (!parse_kvs(r, f)) {
        return false;
    }
    for (uint64_t i = 0; i < f.n_tensors && r.ok; ++i) {
        tensor t;
        t.name = r.str();
        const uint32_t n_dims = r.get<uint32_t>();
        if (!r.ok || n_dims > 8) {
            return false;
        }
        for (uint32_t d = 0; d < n_dims; ++d) {
            t.ne.push_back(r.get<int64_t>());
        }
        t.type = r.get<uint32_t>();
        t.offset = r.get<uint64_t>();
        f.tensors.push_back(std::move(t));
    }
    if (!r.ok || f.alignment == 0 || f.alignment > 4096) {
        return false;
    }
    const size_t start = (r.pos + f.alignment - 1) / f.alignment * f.alignment;
    if (start <= size) {
        f.data = const_cast<uint8_t *>(data) + start;
        f.data_size = size - start;
    }
    return true;
}

struct writer {
    std::vector<uint8_t> out;
    void put(const void * p, size_t k) { out.insert(out.end(), (const uint8_t *) p, (const uint8_t *) p + k); }
    template <typename T> void put(T v) { put(&v, sizeof(v)); }
    void str(const std::string & s) {
        put<uint64_t>(s.size());
        put(s.data(), s.size());
    }
};

// the header, the key-value pairs and the tensor infos, padded to the alignment: where the data starts
std::vector<uint8_t> serialize_header(const file & f) {
    writer w;
    w.put("GGUF", 4);
    w.put<uint32_t>(f.version);
    w.put<uint64_t>(f.tensors.size());
    w.put<uint64_t>(f.kvs.size());
    size_t alignment = 32;
    for (const kv & k : f.kvs) {
        w.str(k.key);
        w.put<uint32_t>(k.type);
        w.put(k.value.data(), k.value.size());
        if (k.key == "general.alignment" && k.type == T_U32 && k.value.size() == 4) {
            uint32_t a;
            memcpy(&a, k.value.data(), 4);
            if (a != 0 && a <= 4096) {
                alignment = a;
            }
        }
    }
    for (const tensor & t : f.tensors) {
        w.str(t.name);
        w.put<uint32_t>(t.ne.size());
        for (int64_t v : t.ne) {
            w.put<int64_t>(v);
        }
        w.put<uint32_t>(t.type);
        w.put<uint64_t>(t.offset);
    }
    w.out.resize((w.out.size() + alignment - 1) / alignment * alignment, 0);
    return w.out;
}

// Inputs that reach an abort in stock llama.cpp (not in the ggufsparse patches), found by this
// fuzzer and listed in docs/fuzzing.md, are skipped: otherwise every run would stop at the first of
// them within seconds. Each check is the narrowest condition the stock code aborts on.
bool reaches_stock_abort(const uint8_t * data, size_t size) {
    reader r{data, size};
    char magic[4];
    if (!r.take(magic, 4) || memcmp(magic, "GGUF", 4) != 0) {
        return false;
    }
    r.get<uint32_t>();
    const uint64_t n_tensors = r.get<uint64_t>();
    const uint64_t n_kv = r.get<uint64_t>();
    std::vector<uint8_t> v;
    for (uint64_t i = 0; i < n_kv && r.ok; ++i) {
        const std::string key = r.str();
        const uint32_t type = r.get<uint32_t>();
        const size_t n = key.size();
        // llama-model.cpp, load_hparams: GGML_ASSERT(hparams.n_layer_all > 0 && hparams.n_layer_all <= LLAMA_MAX_LAYERS)
        // on <arch>.block_count, a u32 (another type is refused before)
        if (n > 12 && key.compare(n - 12, 12, ".block_count") == 0 && type == T_U32) {
            v.clear();
            uint32_t count = 0;
            if (r.value(type, &v)) {
                memcpy(&count, v.data(), 4);
                if (count == 0 || count > 512) {
                    return true;
                }
            }
        } else if (key == "tokenizer.ggml.tokens" && type == T_ARRAY) {
            // llama-vocab.cpp, impl::load: GGML_ASSERT(id_to_token.size() == token_to_id.size()), false
            // when two tokens are the same string (an empty one counts as "[EMPTY_<index>]")
            const uint32_t et = r.get<uint32_t>();
            const uint64_t count = r.get<uint64_t>();
            if (!r.ok || et != T_STRING || count > size) {
                return false;
            }
            std::unordered_set<std::string> seen;
            for (uint64_t t = 0; t < count && r.ok; ++t) {
                std::string word = r.str();
                if (word.empty()) {
                    word = "[EMPTY_" + std::to_string(t) + "]";
                }
                if (r.ok && !seen.insert(std::move(word)).second) {
                    return true;
                }
            }
        } else if (!r.value(type, nullptr)) {
            return false;
        }
    }
    for (uint64_t i = 0; i < n_tensors && r.ok; ++i) {
        r.str();
        const uint32_t n_dims = r.get<uint32_t>();
        if (!r.ok || n_dims > 4) {
            return false;
        }
        int64_t ne[4] = { 1, 1, 1, 1 };
        for (uint32_t d = 0; d < n_dims; ++d) {
            ne[d] = r.get<int64_t>();
        }
        r.get<uint32_t>();
        r.get<uint64_t>();
        // gguf.cpp accepts a shape whose element count is exactly INT64_MAX / ne[i] at a step, or that
        // a zero dimension brings back in range; ggml.c, ggml_new_tensor_impl (called by gguf_init_from_file
        // with all four dimensions) then fails GGML_ASSERT(INT64_MAX / ne[i] > current_nelements)
        int64_t current = ne[0];
        for (int d = 1; d < 4; ++d) {
            if (ne[d] > 1) {
                if (!(INT64_MAX / ne[d] > current)) {
                    return r.ok;
                }
                current = (int64_t) ((uint64_t) current * (uint64_t) ne[d]);  // wrapping: no UB here
            }
        }
    }
    return false;
}

}  // namespace

static char g_path[64];
static int  g_fd = -1;
static bool g_skip_stock = true;

static bool env_flag(const char * name) {
    const char * v = getenv(name);
    return v && v[0] && strcmp(v, "0") != 0;
}

static void quiet_log(enum ggml_log_level, const char *, void *) {}

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
    // FUZZ_LOAD_VERBOSE=1 keeps llama.cpp's log: why a reproducer is refused; FUZZ_LOAD_STOCK=1 loads
    // the inputs that reach a known abort in stock llama.cpp too (fuzz/stock/ reproduces them)
    if (!env_flag("FUZZ_LOAD_VERBOSE")) {
        llama_log_set(quiet_log, nullptr);
    }
    g_skip_stock = !env_flag("FUZZ_LOAD_STOCK");
    setenv("GGML_NO_BACKTRACE", "1", 0);  // an abort's backtrace through gdb takes seconds; libFuzzer prints one
    llama_backend_init();
    g_fd = memfd_create("fuzz-load.gguf", 0);
    if (g_fd < 0) {
        perror("memfd_create");
        abort();
    }
    snprintf(g_path, sizeof(g_path), "/proc/self/fd/%d", g_fd);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    if (g_skip_stock && reaches_stock_abort(data, size)) {
        return -1;  // not kept in the corpus
    }
    if (ftruncate(g_fd, 0) != 0) {
        abort();
    }
    for (size_t done = 0; done < size;) {
        const ssize_t n = pwrite(g_fd, data + done, size - done, (off_t) done);
        if (n <= 0) {
            abort();
        }
        done += (size_t) n;
    }
    llama_model_params params = llama_model_default_params();
    params.n_gpu_layers = 0;
    params.load_mode    = LLAMA_LOAD_MODE_NONE;  // no mmap: tensor data in heap buffers that ASan watches
    llama_model * model = llama_model_load_from_file(g_path, params);
    if (model != nullptr) {
        llama_model_free(model);
    }
    return 0;
}

namespace {

// ---- mutations ----

using rng_t = std::mt19937_64;

template <typename T> const T & pick(rng_t & rng, const std::vector<T> & v) {
    return v[rng() % v.size()];
}

bool chance(rng_t & rng, int percent) {
    return (int) (rng() % 100) < percent;
}

bool is_sparse_tensor(const std::string & name) {
    static const char * marks[] = { "_thr", "_t.weight", "_nm", "_pred_" };
    for (const char * m : marks) {
        if (name.find(m) != std::string::npos) {
            return true;
        }
    }
    return false;
}

// a tensor, ggufsparse ones three times in four when the file has any
int pick_tensor(rng_t & rng, const file & f) {
    std::vector<int> sparse;
    for (size_t i = 0; i < f.tensors.size(); ++i) {
        if (is_sparse_tensor(f.tensors[i].name)) {
            sparse.push_back((int) i);
        }
    }
    if (!sparse.empty() && chance(rng, 75)) {
        return pick(rng, sparse);
    }
    return (int) (rng() % f.tensors.size());
}

int pick_kv(rng_t & rng, const file & f) {
    std::vector<int> sparse;
    for (size_t i = 0; i < f.kvs.size(); ++i) {
        if (f.kvs[i].key.rfind("ggufsparse.", 0) == 0) {
            sparse.push_back((int) i);
        }
    }
    if (!sparse.empty() && chance(rng, 70)) {
        return pick(rng, sparse);
    }
    return (int) (rng() % f.kvs.size());
}

int64_t interesting_i64(rng_t & rng, int64_t cur, const file & f) {
    const uint64_t u = (uint64_t) cur;  // wrapping arithmetic: the harness itself has no UB
    switch (rng() % 14) {
        case 0: return 0;
        case 1: return 1;
        case 2: return -1;
        case 3: return (int64_t) (u + 1);
        case 4: return (int64_t) (u - 1);
        case 5: return (int64_t) (u * 2);
        case 6: return cur / 2;
        case 7: return (int64_t) 1 << (rng() % 63);
        case 8: return std::numeric_limits<int64_t>::max();
        case 9: return std::numeric_limits<int64_t>::min();
        case 10: return pick(rng, std::vector<int64_t>{ 16, 32, 48, 64, 96, 128, 256, 259 });
        case 11: {
            const tensor & o = f.tensors[rng() % f.tensors.size()];
            return o.ne.empty() ? cur : o.ne[rng() % o.ne.size()];
        }
        case 12: return (int64_t) ((uint64_t) 1 << 32) + (int64_t) (rng() % 64);
        default: return (int64_t) (rng() % 4096);
    }
}

const std::vector<uint32_t> & some_types() {
    static const std::vector<uint32_t> types = {
        GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q5_0, GGML_TYPE_Q8_0,
        GGML_TYPE_Q2_K, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K, GGML_TYPE_I8, GGML_TYPE_I16, GGML_TYPE_I32,
        GGML_TYPE_I64, GGML_TYPE_F64, GGML_TYPE_IQ4_NL, GGML_TYPE_MXFP4, 4 /* removed Q4_2 */, GGML_TYPE_COUNT,
        GGML_TYPE_COUNT + 1, 0xffffffffu,
    };
    return types;
}

void mutate_shape(rng_t & rng, file & f) {
    tensor & t = f.tensors[pick_tensor(rng, f)];
    if (chance(rng, 15) || t.ne.empty()) {
        if (chance(rng, 50) && t.ne.size() < 5) {
            t.ne.push_back(chance(rng, 70) ? 1 : interesting_i64(rng, 1, f));
        } else if (!t.ne.empty()) {
            t.ne.pop_back();
        }
        return;
    }
    int64_t & v = t.ne[rng() % t.ne.size()];
    v = interesting_i64(rng, v, f);
}

void mutate_type(rng_t & rng, file & f) {
    tensor & t = f.tensors[pick_tensor(rng, f)];
    t.type = chance(rng, 85) ? pick(rng, some_types()) : (uint32_t) (rng() % (GGML_TYPE_COUNT + 2));
}

void mutate_offset(rng_t & rng, file & f) {
    tensor & t = f.tensors[pick_tensor(rng, f)];
    const tensor & o = f.tensors[rng() % f.tensors.size()];
    switch (rng() % 9) {
        case 0: t.offset = 0; break;
        case 1: t.offset += 32; break;
        case 2: t.offset -= 32; break;
        case 3: t.offset += 1 + rng() % 31; break;
        case 4: t.offset = o.offset; break;
        case 5: t.offset = f.data_size; break;
        case 6: t.offset = f.data_size - 32 * (1 + rng() % 4); break;
        case 7: t.offset = std::numeric_limits<uint64_t>::max() - rng() % 64; break;
        default: t.offset = rng() % (f.data_size + 1); break;
    }
}

// layer numbers and the ggufsparse names a tensor could wrongly carry
const std::vector<std::string> & sparse_suffixes() {
    static const std::vector<std::string> s = {
        "ffn_gate_thr", "ffn_down_t.weight", "attn_q_thr", "attn_q_t.weight", "attn_output_thr",
        "attn_output_t.weight", "attn_k_thr", "attn_k_t.weight", "attn_v_thr", "attn_v_t.weight", "ffn_gate_in_thr",
        "ffn_gate_t.weight", "ffn_up_in_thr", "ffn_up_t.weight", "ffn_down_in_thr", "ffn_pred_a.weight",
        "ffn_pred_b.weight", "ffn_pred_thr", "attn_q_nm.weight", "attn_q_nm_idx", "attn_q_nm_perm", "attn_k_nm.weight",
        "attn_v_nm.weight", "attn_output_nm.weight", "attn_output_nm_idx", "attn_output_nm_perm", "ffn_gate_nm.weight",
        "ffn_gate_nm_idx", "ffn_gate_nm_perm", "ffn_up_nm.weight", "ffn_up_nm_idx", "ffn_up_nm_perm", "ffn_down_nm.weight",
        "ffn_down_nm_idx", "ffn_down_nm_perm", "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight", "attn_q.weight",
        "attn_k.weight", "attn_v.weight", "attn_output.weight", "attn_norm.weight", "ffn_norm.weight",
    };
    return s;
}

void mutate_names(rng_t & rng, file & f) {
    const int i = pick_tensor(rng, f);
    tensor & t = f.tensors[i];
    switch (rng() % 6) {
        case 0: {  // swap two tensors' names
            std::swap(t.name, f.tensors[rng() % f.tensors.size()].name);
            break;
        }
        case 1: {  // another layer
            const size_t p = t.name.find("blk.");
            if (p != std::string::npos) {
                const size_t q = t.name.find('.', p + 4);
                const char * layers[] = { "0", "1", "2", "7", "-1", "4294967296", "00" };
                t.name = t.name.substr(0, p + 4) + layers[rng() % 7] + (q == std::string::npos ? "" : t.name.substr(q));
            }
            break;
        }
        case 2: {  // another (sparse) tensor of the same layer
            const size_t p = t.name.find("blk.");
            const size_t q = p == std::string::npos ? p : t.name.find('.', p + 4);
            if (q != std::string::npos) {
                t.name = t.name.substr(0, q + 1) + pick(rng, sparse_suffixes());
            }
            break;
        }
        case 3: f.tensors.erase(f.tensors.begin() + i); break;
        case 4: f.tensors.push_back(f.tensors[i]); break;  // a duplicate name
        default: {  // a copy under a sparse name
            tensor c = t;
            const size_t p = c.name.find("blk.");
            const size_t q = p == std::string::npos ? p : c.name.find('.', p + 4);
            c.name = (q == std::string::npos ? std::string("blk.0.") : c.name.substr(0, q + 1)) + pick(rng, sparse_suffixes());
            f.tensors.push_back(c);
            break;
        }
    }
}

std::vector<uint8_t> u32_bytes(uint32_t v) { return std::vector<uint8_t>((uint8_t *) &v, (uint8_t *) &v + 4); }
std::vector<uint8_t> f32_bytes(float v) { return std::vector<uint8_t>((uint8_t *) &v, (uint8_t *) &v + 4); }
std::vector<uint8_t> str_bytes(const std::string & s) {
    writer w;
    w.str(s);
    return w.out;
}

float interesting_f32(rng_t & rng) {
    static const std::vector<float> v = {
        NAN, -NAN, INFINITY, -INFINITY, -1.0f, -0.0f, 0.0f, 1e-45f, 1e30f, -1e30f, 3.4e38f, 0.01f, 1.0f, 65504.0f,
    };
    return pick(rng, v);
}

// the ggufsparse keys the loader reads, with values that are valid, borderline or wrong
kv sparse_key(rng_t & rng) {
    kv k;
    switch (rng() % 5) {
        case 0:
            k.key = "ggufsparse.format_version";
            k.type = T_U32;
            k.value = u32_bytes(chance(rng, 80) ? (uint32_t) (rng() % 11) : 0xffffffffu);
            break;
        case 1: {
            static const std::vector<std::string> patterns = {
                "2:4", "4:8", "1:4", "3:16", "1:2", "8:16", "0:4", "4:4", "5:4", "1:17", "16:16", "-1:4", "2:-4",
                "2:4x", "2:", ":4", "", "2:4:8", "2147483647:2147483647", " 2:4", "2 :4", "15:16", "1:1",
            };
            k.key = "ggufsparse.nm.pattern";
            k.type = T_STRING;
            k.value = str_bytes(pick(rng, patterns));
            break;
        }
        case 2: {
            static const std::vector<std::string> acts = { "relu", "fatrelu", "silu", "gelu", "", "RELU", "relu\n" };
            k.key = "ggufsparse.activation";
            k.type = T_STRING;
            k.value = str_bytes(pick(rng, acts));
            break;
        }
        case 3:
            k.key = "ggufsparse.activation_threshold";
            k.type = T_F32;
            k.value = f32_bytes(interesting_f32(rng));
            break;
        default:
            k.key = "general.alignment";
            k.type = T_U32;
            k.value = u32_bytes(pick(rng, std::vector<uint32_t>{ 0, 1, 2, 3, 8, 16, 32, 64, 4096, 0xffffffffu }));
            break;
    }
    return k;
}

void mutate_kv(rng_t & rng, file & f) {
    if (f.kvs.empty() || chance(rng, 20)) {  // add (or replace) a key the loader reads
        kv k = sparse_key(rng);
        for (kv & o : f.kvs) {
            if (o.key == k.key && chance(rng, 80)) {
                o = k;
                return;
            }
        }
        f.kvs.insert(f.kvs.begin() + rng() % (f.kvs.size() + 1), k);
        return;
    }
    const int i = pick_kv(rng, f);
    kv & k = f.kvs[i];
    switch (rng() % 8) {
        case 0: f.kvs.erase(f.kvs.begin() + i); return;
        case 1: f.kvs.push_back(k); return;  // a duplicate key
        case 2: {  // same value bytes, another type
            k.type = (uint32_t) (rng() % (T_COUNT + 1));
            return;
        }
        case 3: {  // another type with a value of that type
            switch (rng() % 5) {
                case 0: k.type = T_U32; k.value = u32_bytes((uint32_t) interesting_i64(rng, 9, f)); break;
                case 1: k.type = T_I32; k.value = u32_bytes((uint32_t) -1); break;
                case 2: k.type = T_F32; k.value = f32_bytes(interesting_f32(rng)); break;
                case 3: k.type = T_STRING; k.value = str_bytes("9"); break;
                default: k.type = T_U64; k.value = std::vector<uint8_t>(8, 0); k.value[0] = 9; break;
            }
            return;
        }
        default: break;
    }
    // a new value of the key's own type
    if (k.type == T_STRING && k.value.size() >= 8) {
        std::string s(k.value.begin() + 8, k.value.end());
        s.resize(s.size() + 16);
        s.resize(LLVMFuzzerMutate((uint8_t *) s.data(), s.size() - 16, s.size()));
        k.value = str_bytes(s);
    } else if (k.type == T_F32 && k.value.size() == 4) {
        k.value = f32_bytes(interesting_f32(rng));
    } else if (k.type == T_ARRAY && k.value.size() >= 12) {
        uint64_t count;
        memcpy(&count, k.value.data() + 4, 8);
        switch (rng() % 3) {
            case 0: count = count + 1; break;
            case 1: count = count ? count - 1 : 0; break;
            default: count = interesting_i64(rng, (int64_t) count, f); break;
        }
        memcpy(k.value.data() + 4, &count, 8);  // the elements stay: a wrong count
    } else if (!k.value.empty()) {
        const size_t s = k.value.size();
        const uint64_t v = (uint64_t) interesting_i64(rng, 0, f);
        memcpy(k.value.data(), &v, std::min<size_t>(s, 8));
    }
}

// bytes of tensor t inside the data, clamped to what is there; false when none
bool tensor_bytes(const file & f, const tensor & t, size_t & begin, size_t & end) {
    if (t.offset >= f.data_size || t.type >= GGML_TYPE_COUNT || ggml_blck_size((ggml_type) t.type) == 0) {
        return false;
    }
    int64_t n = 1;
    for (int64_t v : t.ne) {
        if (v <= 0 || v > (int64_t) f.data_size) {
            return false;
        }
        n *= v;
        if (n > (int64_t) f.data_size * 64) {
            return false;
        }
    }
    const int64_t bs = ggml_blck_size((ggml_type) t.type);
    const size_t bytes = (size_t) ((n + bs - 1) / bs) * ggml_type_size((ggml_type) t.type);
    begin = t.offset;
    end = std::min(f.data_size, begin + bytes);
    return end > begin;
}

uint16_t f16_bits(rng_t & rng) {
    // NaN, -NaN, +Inf, -Inf, -1, -0, the smallest subnormal, the largest finite
    static const std::vector<uint16_t> v = { 0x7e00, 0xfe00, 0x7c00, 0xfc00, 0xbc00, 0x8000, 0x0001, 0x7bff };
    return pick(rng, v);
}

void mutate_values(rng_t & rng, file & f) {
    const tensor & t = f.tensors[pick_tensor(rng, f)];
    size_t b, e;
    if (!tensor_bytes(f, t, b, e)) {
        return;
    }
    uint8_t * p = f.data + b;
    const size_t n = e - b;
    const int64_t k = t.ne.empty() ? 0 : t.ne[0];
    const int writes = chance(rng, 20) ? (int) (n / 4 + 1) : 1 + (int) (rng() % 4);
    for (int w = 0; w < writes; ++w) {
        switch (t.type) {
            case GGML_TYPE_F32: {
                if (n < 4) return;
                const float v = interesting_f32(rng);
                memcpy(p + (rng() % (n / 4)) * 4, &v, 4);
                break;
            }
            case GGML_TYPE_F16:
            case GGML_TYPE_BF16: {
                if (n < 2) return;
                uint16_t v = f16_bits(rng);
                if (t.type == GGML_TYPE_BF16) {
                    v = pick(rng, std::vector<uint16_t>{ 0x7fc0, 0xffc0, 0x7f80, 0xff80, 0xbf80, 0x8000, 0x0001 });
                }
                memcpy(p + (rng() % (n / 2)) * 2, &v, 2);
                break;
            }
            case GGML_TYPE_I32: {  // permutations: out of range, negative, repeated
                if (n < 4) return;
                int32_t v;
                switch (rng() % 6) {
                    case 0: v = -1; break;
                    case 1: v = (int32_t) (uint32_t) k; break;
                    case 2: v = (int32_t) (uint32_t) ((uint64_t) k + 1); break;
                    case 3: v = std::numeric_limits<int32_t>::min(); break;
                    case 4: v = std::numeric_limits<int32_t>::max(); break;
                    default: memcpy(&v, p + (rng() % (n / 4)) * 4, 4); break;  // a repeat
                }
                memcpy(p + (rng() % (n / 4)) * 4, &v, 4);
                break;
            }
            case GGML_TYPE_I8: {  // N:M positions
                p[rng() % n] = pick(rng, std::vector<uint8_t>{ 0x00, 0xff, 0x7f, 0x80, 0x0f, 0xf0, 0x55, (uint8_t) rng() });
                break;
            }
            default: {  // a quantized block: its f16 scale (first two bytes for the types written here)
                const size_t bsz = ggml_type_size((ggml_type) t.type);
                if (bsz < 2 || n < bsz) return;
                const size_t blk = (rng() % (n / bsz)) * bsz;
                if (chance(rng, 70)) {
                    const uint16_t v = f16_bits(rng);
                    memcpy(p + blk, &v, 2);
                } else {
                    p[blk + rng() % bsz] = (uint8_t) rng();
                }
                break;
            }
        }
    }
}

}  // namespace

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t * data, size_t size, size_t max_size, unsigned int seed) {
    rng_t rng(seed);
    file f;
    if (chance(rng, 16) || !parse(data, size, f) || f.tensors.empty()) {
        return LLVMFuzzerMutate(data, size, max_size);
    }
    const int n_mut = chance(rng, 75) ? 1 : 2 + (int) (rng() % 3);
    for (int m = 0; m < n_mut && !f.tensors.empty(); ++m) {
        switch (rng() % 12) {
            case 0: case 1: mutate_shape(rng, f); break;
            case 2: mutate_type(rng, f); break;
            case 3: mutate_offset(rng, f); break;
            case 4: mutate_names(rng, f); break;
            case 5: case 6: case 7: mutate_kv(rng, f); break;
            default: mutate_values(rng, f); break;
        }
    }
    if (chance(rng, 3)) {
        f.version = pick(rng, std::vector<uint32_t>{ 1, 2, 4, 0xffffffffu });
    }
    const std::vector<uint8_t> header = serialize_header(f);
    if (header.size() + f.data_size > max_size) {
        return size;  // only the values changed, in place
    }
    if (f.data_size > 0) {
        memmove(data + header.size(), f.data, f.data_size);
    }
    memcpy(data, header.data(), header.size());
    return header.size() + f.data_size;
}
