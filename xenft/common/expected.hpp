// A value or an error, for functions whose failure is an ordinary outcome (decoding external
// bytes, talking to a peer). std::expected arrives with C++23; this is the small part we need.
#pragma once

#include <cassert>
#include <utility>
#include <variant>

namespace xenft {

template <class E>
struct Unexpected {
    E error;
};

template <class E>
Unexpected<E> unexpected(E e)
{
    return Unexpected<E>{std::move(e)};
}

template <class T, class E>
class Expected {
public:
    Expected(T value) : v_(std::in_place_index<0>, std::move(value)) {}
    Expected(Unexpected<E> e) : v_(std::in_place_index<1>, std::move(e.error)) {}

    bool has_value() const noexcept { return v_.index() == 0; }
    explicit operator bool() const noexcept { return has_value(); }

    T& value() & { assert(has_value()); return std::get<0>(v_); }
    const T& value() const& { assert(has_value()); return std::get<0>(v_); }
    T&& value() && { assert(has_value()); return std::get<0>(std::move(v_)); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }

    const E& error() const& { assert(!has_value()); return std::get<1>(v_); }

private:
    std::variant<T, E> v_;
};

} // namespace xenft
