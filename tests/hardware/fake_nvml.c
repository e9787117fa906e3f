/*
 * A fake libnvidia-ml.so.1 for llamaship's tests: the real nvidia-ml-py code loads it through
 * LD_LIBRARY_PATH and calls it like the driver's library. It exports the functions
 * llamaship.detect.nvml reaches through nvidia-ml-py, with NVML's signatures and return codes.
 *
 * Driven by environment variables, read at nvmlInitWithFlags():
 *   FAKE_GPUS            "name|uuid|total_mb|free_mb|major.minor;..." (unset or empty: no GPU)
 *   FAKE_DRIVER_VERSION  e.g. "535.104.05" (default)
 *   FAKE_CUDA_VERSION    NVML's encoding, e.g. 12020 for CUDA 12.2 (default)
 *   FAKE_NVML_FAIL       "function:code": that function fails with that NVML return code,
 *                        e.g. "nvmlInitWithFlags:9" (driver not loaded)
 *   FAKE_NVML_LOG        a file each call appends its function name to
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int nvmlReturn_t;

#define NVML_SUCCESS 0
#define NVML_ERROR_UNINITIALIZED 1
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_ERROR_DRIVER_NOT_LOADED 9
#define NVML_ERROR_GPU_IS_LOST 15
#define NVML_ERROR_UNKNOWN 999

#define MAX_GPUS 16
#define MAX_TEXT 96

typedef struct {
    char name[MAX_TEXT];
    char uuid[MAX_TEXT];
    unsigned long long total_mb;
    unsigned long long free_mb;
    int major;
    int minor;
} fake_gpu;

typedef fake_gpu *nvmlDevice_t;

typedef struct {
    unsigned long long total;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_t;

static fake_gpu gpus[MAX_GPUS];
static unsigned int gpu_count;
static int init_count;

/* Log the call; return the failure FAKE_NVML_FAIL asks this function for, else NVML_SUCCESS. */
static nvmlReturn_t enter(const char *function) {
    const char *path = getenv("FAKE_NVML_LOG");
    if (path != NULL && *path != '\0') {
        FILE *file = fopen(path, "a");
        if (file != NULL) {
            fprintf(file, "%s\n", function);
            fclose(file);
        }
    }
    const char *failure = getenv("FAKE_NVML_FAIL");
    size_t length = strlen(function);
    if (failure != NULL && strncmp(failure, function, length) == 0 && failure[length] == ':') {
        return (nvmlReturn_t)atoi(failure + length + 1);
    }
    return NVML_SUCCESS;
}

#define ENTER(function)                          \
    do {                                         \
        nvmlReturn_t injected = enter(function); \
        if (injected != NVML_SUCCESS) {          \
            return injected;                     \
        }                                        \
    } while (0)

static nvmlReturn_t copy_text(char *out, unsigned int length, const char *text) {
    if (out == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    if (strlen(text) + 1 > length) {
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    strcpy(out, text);
    return NVML_SUCCESS;
}

/* Parse one "name|uuid|total_mb|free_mb|major.minor" entry; 0 on success. */
static int parse_gpu(char *entry, fake_gpu *gpu) {
    char *fields[5];
    char *rest = entry;
    for (int i = 0; i < 5; i++) {
        fields[i] = strsep(&rest, "|");
        if (fields[i] == NULL) {
            return -1;
        }
    }
    if (rest != NULL || strlen(fields[0]) >= MAX_TEXT || strlen(fields[1]) >= MAX_TEXT) {
        return -1;
    }
    strcpy(gpu->name, fields[0]);
    strcpy(gpu->uuid, fields[1]);
    gpu->total_mb = strtoull(fields[2], NULL, 10);
    gpu->free_mb = strtoull(fields[3], NULL, 10);
    return sscanf(fields[4], "%d.%d", &gpu->major, &gpu->minor) == 2 ? 0 : -1;
}

static int parse_gpus(void) {
    const char *spec = getenv("FAKE_GPUS");
    gpu_count = 0;
    if (spec == NULL || *spec == '\0') {
        return 0;
    }
    char *copy = strdup(spec);
    char *rest = copy;
    char *entry;
    int status = 0;
    while (status == 0 && (entry = strsep(&rest, ";")) != NULL) {
        if (*entry == '\0') {
            continue;
        }
        if (gpu_count == MAX_GPUS || parse_gpu(entry, &gpus[gpu_count]) != 0) {
            status = -1;
        } else {
            gpu_count++;
        }
    }
    free(copy);
    return status;
}

nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    ENTER("nvmlInitWithFlags");
    if (parse_gpus() != 0) {
        return NVML_ERROR_UNKNOWN;
    }
    init_count++;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlShutdown(void) {
    ENTER("nvmlShutdown");
    if (init_count == 0) {
        return NVML_ERROR_UNINITIALIZED;
    }
    init_count--;
    return NVML_SUCCESS;
}

const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    default: return "Unknown Error";
    }
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    ENTER("nvmlSystemGetDriverVersion");
    if (init_count == 0) {
        return NVML_ERROR_UNINITIALIZED;
    }
    const char *driver = getenv("FAKE_DRIVER_VERSION");
    return copy_text(version, length, driver != NULL ? driver : "535.104.05");
}

nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *cuda_version) {
    ENTER("nvmlSystemGetCudaDriverVersion");
    if (cuda_version == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    /* Like the real library, this one works without nvmlInit (it asks libcuda). */
    const char *cuda = getenv("FAKE_CUDA_VERSION");
    *cuda_version = cuda != NULL ? atoi(cuda) : 12020;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    ENTER("nvmlDeviceGetCount_v2");
    if (init_count == 0) {
        return NVML_ERROR_UNINITIALIZED;
    }
    if (count == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    *count = gpu_count;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    ENTER("nvmlDeviceGetHandleByIndex_v2");
    if (init_count == 0) {
        return NVML_ERROR_UNINITIALIZED;
    }
    if (device == NULL || index >= gpu_count) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    *device = &gpus[index];
    return NVML_SUCCESS;
}

static nvmlReturn_t check_device(nvmlDevice_t device) {
    if (init_count == 0) {
        return NVML_ERROR_UNINITIALIZED;
    }
    if (device < &gpus[0] || device >= &gpus[gpu_count]) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    ENTER("nvmlDeviceGetName");
    nvmlReturn_t status = check_device(device);
    return status != NVML_SUCCESS ? status : copy_text(name, length, device->name);
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    ENTER("nvmlDeviceGetUUID");
    nvmlReturn_t status = check_device(device);
    return status != NVML_SUCCESS ? status : copy_text(uuid, length, device->uuid);
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    ENTER("nvmlDeviceGetMemoryInfo");
    nvmlReturn_t status = check_device(device);
    if (status != NVML_SUCCESS) {
        return status;
    }
    if (memory == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    memory->total = device->total_mb * 1024ULL * 1024ULL;
    memory->free = device->free_mb * 1024ULL * 1024ULL;
    memory->used = memory->total - memory->free;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t device, int *major, int *minor) {
    ENTER("nvmlDeviceGetCudaComputeCapability");
    nvmlReturn_t status = check_device(device);
    if (status != NVML_SUCCESS) {
        return status;
    }
    if (major == NULL || minor == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    *major = device->major;
    *minor = device->minor;
    return NVML_SUCCESS;
}
