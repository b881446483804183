#include "xenft/engine/machine.hpp"

#include <openssl/evp.h>

#include <cstring>

namespace xenft::engine {

Machine::Machine(std::unique_ptr<Backend> backend, devices::TimeSource host_time, const MachineSpec& spec)
    : backend_(std::move(backend)), clock_(std::move(host_time)), timer_([this] { return clock_.now(); }),
      clock_reg_([this] { return clock_.now(); })
{
    bus_.attach(uart_);
    bus_.attach(timer_);
    bus_.attach(clock_reg_);
    if (spec.network) {
        net_ = std::make_unique<devices::VirtioNet>(*backend_, spec.mac);
        bus_.attach(*net_);
    }
    if (spec.disk_bytes != 0) {
        blk_ = std::make_unique<devices::VirtioBlk>(*backend_, spec.disk_bytes);
        bus_.attach(*blk_);
    }
}

std::vector<std::uint8_t> Machine::save_devices() const
{
    return bus_.save_state();
}

Expected<bool, std::string> Machine::load_devices(std::span<const std::uint8_t> blob)
{
    return bus_.load_state(blob);
}

logformat::Sha256 Machine::digest()
{
    const logformat::Sha256 vm = backend_->digest();
    const std::vector<std::uint8_t> dev = save_devices();
    logformat::Sha256 out{};
    unsigned int len = 0;
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
    EVP_DigestUpdate(ctx, vm.data(), vm.size());
    EVP_DigestUpdate(ctx, dev.data(), dev.size());
    EVP_DigestFinal_ex(ctx, out.data(), &len);
    EVP_MD_CTX_free(ctx);
    return out;
}

std::vector<std::uint8_t> Machine::save_state()
{
    std::vector<std::uint8_t> out = backend_->save_state();
    const std::uint64_t backend_bytes = out.size();
    const std::vector<std::uint8_t> dev = save_devices();
    out.insert(out.end(), dev.begin(), dev.end());
    out.resize(out.size() + sizeof backend_bytes);
    std::memcpy(out.data() + out.size() - sizeof backend_bytes, &backend_bytes, sizeof backend_bytes);
    return out;
}

Expected<bool, std::string> Machine::restore_state(std::span<const std::uint8_t> blob)
{
    std::uint64_t backend_bytes = 0;
    if (blob.size() < sizeof backend_bytes)
        return unexpected(std::string("machine state: truncated"));
    std::memcpy(&backend_bytes, blob.data() + blob.size() - sizeof backend_bytes, sizeof backend_bytes);
    if (backend_bytes > blob.size() - sizeof backend_bytes)
        return unexpected(std::string("machine state: truncated"));
    auto vm = backend_->restore_state(blob.first(backend_bytes));
    if (!vm)
        return vm;
    return load_devices(blob.subspan(backend_bytes, blob.size() - sizeof backend_bytes - backend_bytes));
}

devices::Device* Machine::interrupting_device() const
{
    for (devices::Device* d : bus_.devices())
        if (d->pending_interrupt())
            return d;
    return nullptr;
}

devices::Device* Machine::device_with_vector(std::uint8_t vector) const
{
    for (devices::Device* d : bus_.devices())
        if (auto v = d->pending_interrupt(); v && *v == vector)
            return d;
    return nullptr;
}

} // namespace xenft::engine
