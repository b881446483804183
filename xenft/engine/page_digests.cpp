#include "xenft/engine/page_digests.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <memory>
#include <stdexcept>

namespace xenft::engine {

namespace {

constexpr std::size_t kUnloggedPagesNamed = 8;

struct CtxFree {
    void operator()(EVP_MD_CTX* c) const noexcept { EVP_MD_CTX_free(c); }
};

// SHA-256 over a few pieces; OpenSSL fails here only when out of memory.
class Sha256 {
public:
    Sha256() : ctx_(EVP_MD_CTX_new())
    {
        if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1)
            throw std::bad_alloc();
    }
    Sha256& add(const void* data, std::size_t n)
    {
        EVP_DigestUpdate(ctx_.get(), data, n);
        return *this;
    }
    template <typename T> Sha256& add_value(const T& v) { return add(&v, sizeof v); }
    logformat::Sha256 finish()
    {
        logformat::Sha256 out{};
        unsigned int n = 0;
        EVP_DigestFinal_ex(ctx_.get(), out.data(), &n);
        EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr); // ready for the next
        return out;
    }

private:
    std::unique_ptr<EVP_MD_CTX, CtxFree> ctx_;
};

} // namespace

PageDigests::PageDigests(std::uint64_t pages, std::uint64_t sweep_pages)
    : sweep_pages_(std::max<std::uint64_t>(sweep_pages, 1)), page_hashes_(pages),
      group_hashes_((pages + kPagesPerGroup - 1) / kPagesPerGroup), group_stale_(group_hashes_.size(), true)
{
}

bool PageDigests::rehash(std::uint64_t gfn, const PageReader& read)
{
    static thread_local Sha256 sha;
    const auto bytes = read(gfn);
    logformat::Sha256 h{}; // an unpopulated page: zero, as before the sweep reached it
    if (!bytes.empty())
        h = sha.add_value(gfn).add(bytes.data(), std::min(bytes.size(), kPageBytes)).finish();
    if (h == page_hashes_[gfn])
        return false;
    page_hashes_[gfn] = h;
    group_stale_[gfn / kPagesPerGroup] = true;
    return true;
}

void PageDigests::rehash_group(std::uint64_t group)
{
    static thread_local Sha256 sha;
    const std::uint64_t first = group * kPagesPerGroup;
    const std::uint64_t end = std::min<std::uint64_t>(first + kPagesPerGroup, page_hashes_.size());
    group_hashes_[group] = sha.add(page_hashes_[first].data(), (end - first) * sizeof(logformat::Sha256)).finish();
    group_stale_[group] = false;
}

PageDigests::Round PageDigests::update(std::span<const std::uint64_t> written, const PageReader& read)
{
    Round r;
    for (std::uint64_t gfn : written) {
        if (gfn >= covered_)
            continue; // hashed when the sweep gets there
        rehash(gfn, read);
        ++r.written;
    }
    const std::uint64_t pages = page_hashes_.size();
    for (std::uint64_t n = 0; n < std::min(sweep_pages_, pages); ++n, cursor_ = (cursor_ + 1) % pages) {
        // A written page was hashed above: if this one changed, nothing logged the write.
        const bool first_time = cursor_ >= covered_;
        if (rehash(cursor_, read) && !first_time) {
            if (r.unlogged_pages.size() < kUnloggedPagesNamed)
                r.unlogged_pages.push_back(cursor_);
            ++r.unlogged;
        }
        if (first_time)
            covered_ = cursor_ + 1;
        ++r.swept;
    }
    for (std::uint64_t g = 0; g < group_hashes_.size(); ++g)
        if (group_stale_[g])
            rehash_group(g);
    ++rounds_;
    return r;
}

logformat::Sha256 PageDigests::digest(std::span<const std::uint8_t> rest) const
{
    Sha256 sha;
    const std::uint64_t header[] = {page_hashes_.size(), covered_};
    sha.add(header, sizeof header);
    const std::uint64_t covered_groups = (covered_ + kPagesPerGroup - 1) / kPagesPerGroup;
    sha.add(group_hashes_.data(), covered_groups * sizeof(logformat::Sha256));
    sha.add(rest.data(), rest.size());
    return sha.finish();
}

} // namespace xenft::engine
